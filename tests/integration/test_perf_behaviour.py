"""Behaviours behind the performance targets (issue 9), checked as behaviours, not timings.

- Polling cadence: an active machine (move or command pending, or seen running) is asked
  again as soon as its reply is in, never sooner than ``poll_min_gap_s`` after the last
  request; an idle one keeps ``poll_idle_s``; no poll slips in while a command talks to the
  PLC.
- Broadcasts written in slices keep each session's order: its direct replies after the
  broadcasts sent before them, ``command_result`` before ``move_completed``, one machine's
  status broadcasts in the order of the changes, and every subscriber gets every broadcast.

Intervals here are either far longer than a test (60 s: "never within the test") or a floor
that only a bug could undercut; nothing asserts how fast something happens.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from carousel_gateway.fleet.events import EventBus, MoveCompleted, StatusChanged
from carousel_gateway.fleet.machine import Machine
from carousel_gateway.plc.protocol import Command, RequestParser, encode_reply
from carousel_gateway.sim.carousel import CarouselModel
from carousel_gateway.sim.server import SimulatorServer
from tests.integration.conftest import EventRecorder, gateway_config, machine_config
from tests.integration.wsclient import TestClient

pytestmark = pytest.mark.asyncio

IDLE = 21  # ready, remote, stopped
RUNNING = 23  # ready, remote, moving
NEVER = 60.0  # an interval no test waits for


class GatedPlc:
    """A PLC whose replies the test releases one by one (or answers at once when open).

    Every request lands in ``requests`` as ``(command, argument)``; a held request is
    answered by :meth:`release` with the current ``status`` and ``position``.
    """

    def __init__(self) -> None:
        self.status = IDLE
        self.position = 0
        self.gated = False
        self.requests: asyncio.Queue[tuple[int, int | None]] = asyncio.Queue()
        self.arrivals: list[float] = []
        self._held: list[asyncio.Transport] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _GatedLink(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def release(self) -> None:
        transport = self._held.pop(0)
        transport.write(encode_reply(self.status, self.position))

    async def next_request(self, timeout: float = 5.0) -> tuple[int, int | None]:
        async with asyncio.timeout(timeout):
            return await self.requests.get()

    def _received(self, transport: asyncio.Transport, command: int, argument: int | None):
        self.arrivals.append(asyncio.get_running_loop().time())
        self.requests.put_nowait((command, argument))
        if command == Command.MOVE:
            self.status = RUNNING
        if self.gated:
            self._held.append(transport)
        else:
            transport.write(encode_reply(self.status, self.position))


class _GatedLink(asyncio.Protocol):
    def __init__(self, plc: GatedPlc) -> None:
        self.plc = plc
        self.parser = RequestParser()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for request in self.parser.feed(data):
            self.plc._received(self.transport, request.command, request.argument)


@pytest.fixture
async def gated_machine():
    """A machine on a gated PLC, connected and read once; the PLC then holds its replies."""
    plcs: list[GatedPlc] = []
    machines: list[Machine] = []

    async def make(**overrides: Any) -> tuple[Machine, GatedPlc, EventRecorder]:
        plc = GatedPlc()
        plc.status = overrides.pop("status", IDLE)
        await plc.start()
        plcs.append(plc)
        bus = EventBus()
        recorder = EventRecorder(bus)
        settings = {"poll_idle_s": NEVER, "poll_active_s": NEVER, "request_timeout_s": 10.0}
        machine = Machine(machine_config(plc.port, **(settings | overrides)), bus)
        machines.append(machine)
        machine.start()
        await recorder.wait_for(lambda e: machine.snapshot.raw_status is not None)
        return machine, plc, recorder

    yield make
    for machine in machines:
        await machine.stop()
    for plc in plcs:
        await plc.stop()


def drain(plc: GatedPlc) -> list[tuple[int, int | None]]:
    out = []
    while not plc.requests.empty():
        out.append(plc.requests.get_nowait())
    return out


# -- polling cadence -----------------------------------------------------------------------------


async def test_running_machine_is_asked_again_as_soon_as_each_reply_is_in(gated_machine):
    # Seen running (moved from its panel, no command of ours): active, so back to back.
    _, plc, _ = await gated_machine(status=RUNNING, poll_min_gap_s=0.0)
    plc.gated = True
    drain(plc)
    for _ in range(3):
        if not plc._held:
            assert await plc.next_request() == (Command.STATUS, None)
        plc.release()
        # With every interval at 60 s, only back-to-back polling asks again.
        assert await plc.next_request() == (Command.STATUS, None)


async def test_idle_machine_is_not_asked_again_before_its_idle_interval(gated_machine):
    machine, plc, _ = await gated_machine(status=IDLE, poll_min_gap_s=0.0)
    drain(plc)
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert plc.requests.empty()
    assert not machine.active


async def test_back_to_back_polls_never_come_sooner_than_the_minimum_gap(gated_machine):
    gap = 0.3
    _, plc, _ = await gated_machine(status=RUNNING, poll_min_gap_s=gap)
    plc.arrivals.clear()
    drain(plc)
    for _ in range(3):
        await plc.next_request()
    starts = plc.arrivals[-3:]
    # A floor, not a speed: requests may come later, never earlier.
    assert all(b - a >= gap * 0.95 for a, b in itertools.pairwise(starts))


async def test_back_to_back_off_waits_the_active_interval_after_each_reply(gated_machine):
    _, plc, _ = await gated_machine(status=RUNNING, poll_back_to_back=False)
    drain(plc)
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert plc.requests.empty()  # poll_active_s is 60 s here


async def test_no_poll_slips_between_a_commands_reading_and_its_move(gated_machine):
    machine, plc, _ = await gated_machine(status=IDLE, poll_min_gap_s=0.0)
    plc.gated = True
    drain(plc)
    move = asyncio.create_task(machine.execute(Command.MOVE, 10))
    assert await plc.next_request() == (Command.STATUS, None)  # the fresh interlock reading
    for _ in range(10):
        await asyncio.sleep(0)  # room for the poll loop to queue a request, if it would
    plc.release()
    assert await plc.next_request() == (Command.MOVE, 9)  # nothing in between
    plc.release()
    executed = await move
    assert executed.outcome is not None
    # The move is pending: polling is back to back until the arrival is seen.
    assert await plc.next_request() == (Command.STATUS, None)
    plc.position, plc.status = 9, IDLE
    plc.gated = False
    plc.release()
    outcome = await asyncio.wait_for(executed.outcome, 5)
    assert isinstance(outcome, MoveCompleted) and outcome.position == 10
    assert not machine.active  # back to the idle interval


async def test_a_move_is_followed_to_its_arrival_by_back_to_back_polls_alone(machine_factory):
    # Every interval is 60 s: only back-to-back polling can see the chain pass and stop.
    server = SimulatorServer(CarouselModel(30, 0.03))
    await server.start()
    try:
        machine, recorder = await machine_factory(
            server, poll_idle_s=NEVER, poll_active_s=NEVER, poll_min_gap_s=0.005
        )
        await recorder.wait_for(lambda e: machine.snapshot.raw_status is not None)
        executed = await machine.execute(Command.MOVE, 9)
        assert executed.outcome is not None
        outcome = await asyncio.wait_for(executed.outcome, 5)
        assert isinstance(outcome, MoveCompleted) and outcome.position == 9
        positions = {e.snapshot.position for e in recorder.of_type(StatusChanged)}
        assert len(positions - {None}) >= 3  # it was watched on the way, not just at the end
    finally:
        await server.stop()


# -- ordering of sliced broadcasts ---------------------------------------------------------------


def url(gateway) -> str:
    return f"ws://127.0.0.1:{gateway.websocket.port}"


async def test_sliced_broadcasts_keep_every_sessions_order_and_lose_nothing(gateway_factory):
    # Slices of one session: every broadcast to more than one session is sliced.
    gateway = await gateway_factory(
        gateway_config(2, websocket={"host": "127.0.0.1", "port": 0, "broadcast_slice_sessions": 1})
    )
    watchers = []
    for _ in range(12):
        c = await TestClient.open(url(gateway))
        await c.next()
        await c.request({"type": "subscribe", "subscription_type": "all_events"})
        watchers.append(c)
    commander = await TestClient.open(url(gateway))
    await commander.next()
    await commander.request({"type": "subscribe", "subscription_type": "all_events"})
    for machine_id, target in (("machine_1", 12), ("machine_2", 20), ("machine_1", 3)):
        reply = await commander.request(
            {
                "type": "send_command",
                "machine_id": machine_id,
                "command": {"command": 1, "argument": target},
            }
        )
        assert reply["type"] == "command_result"
        done = await commander.wait_for(
            lambda m, reply=reply: (
                m["type"] == "move_completed" and m.get("request_id") == reply["request_id"]
            )
        )
        assert done["position"] == target
    assert gateway.websocket.outbox.sliced > 0

    sequences = []
    for c in [*watchers, commander]:
        assert (await c.request({"type": "ping"}))["type"] == "pong"  # all before it is in
        messages = [m for m in c.received if m["type"] != "welcome"]
        # command_result before move_completed, for every command.
        seen_results: set[int] = set()
        for m in messages:
            if m["type"] == "command_result":
                seen_results.add(m["data"]["command_id"])
            elif m["type"] == "move_completed":
                assert m["command_id"] in seen_results
        # One machine's status broadcasts in the order of its changes.
        status = [
            (machine_id, state["last_update"], state["position"])
            for m in messages
            if m["type"] == "status_broadcast" and len(m["status"]) == 1
            for machine_id, state in m["status"].items()
        ]
        for machine_id in ("machine_1", "machine_2"):
            stamps = [s[1] for s in status if s[0] == machine_id]
            assert stamps == sorted(stamps)
        sequences.append(status)
        await c.close()
    # Every session got the same broadcasts, none lost, none twice.
    assert all(s == sequences[0] for s in sequences)
    assert len(sequences[0]) >= 3


# -- back-to-back polls driven by the link's callbacks ---------------------------------------------


async def test_a_command_during_back_to_back_polls_waits_for_the_poll_in_flight(gated_machine):
    # The polls of a running machine are sent from the link's callbacks, not a task: a
    # command arriving while one waits for its reply must still wait for that reply (one
    # request outstanding at a time: the stream has no framing).
    machine, plc, _ = await gated_machine(status=RUNNING, poll_min_gap_s=0.001)
    plc.gated = True
    drain(plc)
    if not plc._held:
        assert await plc.next_request() == (Command.STATUS, None)  # a poll, held by the PLC
    command = asyncio.create_task(machine.execute(Command.STATUS, None))
    for _ in range(10):
        await asyncio.sleep(0)  # room for the command to write, if it would
    assert plc.requests.empty()  # the command waits for the poll's reply
    plc.release()
    assert await plc.next_request() == (Command.STATUS, None)  # the command's own request
    plc.gated = False
    plc.release()
    executed = await asyncio.wait_for(command, 5)
    assert executed.accepted is not None
    # And the polls go on afterwards, back to back (every interval is 60 s here).
    drain(plc)
    assert await plc.next_request() == (Command.STATUS, None)


async def test_back_to_back_polls_stop_when_the_machine_stops(gated_machine):
    machine, plc, recorder = await gated_machine(status=RUNNING, poll_min_gap_s=0.001)
    drain(plc)
    await plc.next_request()
    plc.status = IDLE  # the next reply shows the carousel stopped
    await recorder.wait_for(lambda e: not machine.active)
    drain(plc)
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert plc.requests.empty()  # idle: the next poll is poll_idle_s (60 s) away


async def test_a_reading_that_fails_to_apply_does_not_stop_the_polls(gated_machine, monkeypatch):
    # A bug in applying one reading ends the burst; the poll task takes over and polls go on.
    machine, plc, _ = await gated_machine(status=RUNNING, poll_min_gap_s=0.001)
    original = machine._apply_reply
    failed: list[object] = []

    def apply_once_failing(reply, *, confirmed):
        if not failed:
            failed.append(reply)
            raise RuntimeError("a bug in a reading's handling")
        return original(reply, confirmed=confirmed)

    monkeypatch.setattr(machine, "_apply_reply", apply_once_failing)
    drain(plc)
    for _ in range(5):
        assert await plc.next_request() == (Command.STATUS, None)
    assert failed
