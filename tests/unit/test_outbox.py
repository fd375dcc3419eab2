"""The outbox: frames built once, large broadcasts in slices, per-session order kept.

Sessions here are stand-ins whose transports record what is written, so the order of
writes can be checked exactly; no sockets, no timing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from carousel_gateway.api import ws_internals
from carousel_gateway.api.outbox import DIRECT_MAX, Outbox, text_frame


@dataclass
class FakeTransport:
    log: list[tuple[int, bytes]]
    owner: int
    buffered: int = 0

    def write(self, data: bytes) -> None:
        self.log.append((self.owner, data))

    def get_write_buffer_size(self) -> int:
        return self.buffered


@dataclass
class FakeProtocol:
    state: State = State.OPEN
    extensions: list = field(default_factory=list)


@dataclass
class FakeConnection:
    transport: FakeTransport
    protocol: FakeProtocol = field(default_factory=FakeProtocol)
    send_in_progress: object = None


@dataclass(eq=False)
class FakeSession:
    id: int
    connection: FakeConnection
    alive: bool = True


def sessions(count: int, log: list) -> tuple[FakeSession, ...]:
    return tuple(FakeSession(i, FakeConnection(FakeTransport(log, i))) for i in range(count))


def make_outbox(slice_size: int = 4, **kwargs) -> tuple[Outbox, list, dict]:
    slow: list = []
    sent: dict[str, int] = {}

    def on_sent(kind: str, count: int) -> None:
        sent[kind] = sent.get(kind, 0) + count

    box = Outbox(
        slice_size=slice_size,
        max_buffer_bytes=kwargs.get("max_buffer_bytes", 1 << 20),
        on_slow=slow.append,
        on_sent=on_sent,
    )
    return box, slow, sent


def received(log: list, session: FakeSession) -> list[bytes]:
    """The payloads written to one session, in order (frames decoded)."""
    return [frame[2:] for owner, frame in log if owner == session.id]


async def settle(box: Outbox) -> None:
    for _ in range(1000):
        if not box.pending:
            return
        await asyncio.sleep(0)
    raise AssertionError("the outbox never finished")


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_is_what_websockets_would_send(length):
    payload = b"x" * length
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


async def test_small_broadcast_is_written_at_once_to_each_session():
    log: list = []
    targets = sessions(3, log)
    box, _, sent = make_outbox(slice_size=4)
    box.send(targets, "status_broadcast", b"{}")
    assert [owner for owner, _ in log] == [0, 1, 2]
    assert all(frame == text_frame(b"{}") for _, frame in log)
    assert sent == {"status_broadcast": 3}
    assert box.pending == 0 and box.sliced == 0


async def test_large_broadcast_is_written_in_slices_letting_the_loop_run_between():
    log: list = []
    targets = sessions(10, log)
    box, _, sent = make_outbox(slice_size=4)
    turns: list[int] = []

    def other_work() -> None:  # something else the loop has to do meanwhile
        turns.append(len(log))

    done: list[bool] = []
    box.send(targets, "status_broadcast", b"{}", done=lambda: done.append(True))
    assert len(log) == 4  # the first slice only
    asyncio.get_running_loop().call_soon(other_work)
    await settle(box)
    assert turns and turns[0] < 10  # it ran before the broadcast was complete
    assert sorted(owner for owner, _ in log) == list(range(10))  # each once
    assert sent == {"status_broadcast": 10}
    assert done == [True] and box.sliced == 1


async def test_direct_message_during_a_sliced_broadcast_comes_after_it_for_that_session():
    log: list = []
    targets = sessions(10, log)
    box, _, _ = make_outbox(slice_size=4)
    box.send(targets, "status_broadcast", b"B1")
    early, late = targets[1], targets[8]  # one already written, one still owed
    box.send((late,), "command_result", b"D-late")
    box.send((early,), "pong", b"D-early")
    # Both direct messages went out at once, each after B1 for its session.
    assert received(log, late) == [b"B1", b"D-late"]
    assert received(log, early) == [b"B1", b"D-early"]
    await settle(box)
    assert received(log, late) == [b"B1", b"D-late"]  # B1 not written twice
    assert all(received(log, s)[0] == b"B1" for s in targets)
    assert sum(1 for _, frame in log if frame[2:] == b"B1") == 10


async def test_broadcasts_queued_behind_each_other_keep_their_order_for_every_session():
    log: list = []
    targets = sessions(20, log)
    box, _, sent = make_outbox(slice_size=3)
    box.send(targets, "status_broadcast", b"B1")
    box.send(targets[::-1], "status_broadcast", b"B2")  # another order, same sessions
    box.send(targets[5:15], "machine_event", b"B3")
    middle = targets[10]
    box.send((middle,), "command_result", b"D")
    assert received(log, middle) == [b"B1", b"B2", b"B3", b"D"]
    for i in range(DIRECT_MAX):  # small broadcasts jump the queue the same way
        box.send(targets[:2], "move_completed", b"S%d" % i)
    await settle(box)
    for session in targets:
        expected = [b"B1", b"B2"]
        if 5 <= session.id < 15:
            expected.append(b"B3")
        if session is middle:
            expected.append(b"D")
        if session.id < 2:
            expected += [b"S%d" % i for i in range(DIRECT_MAX)]
        assert received(log, session) == expected, session.id
    assert sent["status_broadcast"] == 40 and sent["machine_event"] == 10


async def test_a_session_over_its_buffer_bound_is_reported_once_then_skipped():
    log: list = []
    targets = sessions(3, log)
    box, slow, _ = make_outbox(slice_size=8, max_buffer_bytes=100)
    targets[1].connection.transport.buffered = 101

    def drop(session: FakeSession) -> None:  # what the WebSocket API does
        session.alive = False
        slow_seen.append(session.id)

    slow_seen: list[int] = []
    box._on_slow = drop
    box.send(targets, "status_broadcast", b"1")
    box.send(targets, "status_broadcast", b"2")
    assert slow_seen == [1]
    assert received(log, targets[1]) == [b"1"]
    assert received(log, targets[0]) == [b"1", b"2"] == received(log, targets[2])
    assert slow == []  # the replaced callback got it


async def test_closing_sessions_are_skipped_and_compressed_ones_framed_by_websockets(
    monkeypatch,
):
    log: list = []
    targets = sessions(3, log)
    targets[0].connection.protocol.state = State.CLOSING
    targets[2].connection.protocol.extensions = ["permessage-deflate"]
    through_websockets: list = []
    monkeypatch.setattr(
        ws_internals,
        "broadcast",
        lambda connections, payload, text: through_websockets.append((connections, payload)),
    )
    box, _, sent = make_outbox()
    box.send(targets, "status_broadcast", b"{}")
    assert [owner for owner, _ in log] == [1]
    assert through_websockets == [((targets[2].connection,), b"{}")]
    assert sent == {"status_broadcast": 2}


async def test_an_empty_broadcast_completes_at_once():
    box, _, sent = make_outbox()
    done: list[bool] = []
    box.send((), "status_broadcast", b"{}", done=lambda: done.append(True))
    assert done == [True] and sent == {}
