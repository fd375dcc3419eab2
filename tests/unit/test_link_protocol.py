"""The port-3200 link's byte handling: it holds one reply's bytes and nothing else."""

from __future__ import annotations

import asyncio

import pytest

from carousel_gateway.plc.connection import OUT_OF_STEP, PlcOutOfStep, _LinkProtocol

pytestmark = pytest.mark.asyncio


class FakeTransport(asyncio.Transport):
    """Records an abort; the protocol under test never writes to it."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


def link() -> tuple[_LinkProtocol, FakeTransport, list[str]]:
    faults: list[str] = []
    protocol = _LinkProtocol(lambda _, reason: faults.append(reason))
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport, faults


async def test_a_reply_in_pieces_completes_once_whole() -> None:
    protocol, transport, faults = link()
    waiter = protocol.expect(2, timeout=5.0)
    protocol.data_received(b"\x15")
    assert not waiter.done()
    protocol.data_received(b"\x04")
    assert await waiter == b"\x15\x04"
    assert protocol.buffered == 0 and not faults and not transport.aborted


async def test_bytes_with_no_request_outstanding_put_the_link_out_of_step() -> None:
    protocol, transport, faults = link()
    waiter = protocol.expect(2, timeout=5.0)
    protocol.data_received(b"\x15\x04")
    assert await waiter == b"\x15\x04"
    protocol.data_received(b"\x15")  # a trailing byte, ~20 ms later
    assert transport.aborted and not protocol.usable
    assert faults and faults[0].startswith(OUT_OF_STEP)
    assert "no request outstanding" in faults[0]


async def test_a_byte_past_the_reply_fails_the_reading_it_belongs_to() -> None:
    # The stray byte came first, then the real reply: read as [stray, status] before.
    protocol, transport, faults = link()
    waiter = protocol.expect(2, timeout=5.0)
    protocol.data_received(b"\x15")
    protocol.data_received(b"\x05\x04")
    with pytest.raises(PlcOutOfStep, match="3 bytes for a 2-byte reply"):
        await waiter
    assert transport.aborted and protocol.buffered == 0 and len(faults) == 1


@pytest.mark.parametrize("size", [3, 4096, 256 << 20])
async def test_a_stream_of_any_size_is_never_buffered(size: int) -> None:
    protocol, transport, _ = link()
    waiter = protocol.expect(2, timeout=5.0)
    chunk = bytes(min(size, 1 << 20))
    sent = 0
    while sent < size and not transport.aborted:
        protocol.data_received(chunk)
        sent += len(chunk)
        assert protocol.buffered <= 2
    assert transport.aborted
    assert sent == len(chunk)  # dropped at the first chunk: the rest is never read
    with pytest.raises(PlcOutOfStep):
        await waiter


# -- the request deadline: one lazy timer per link -------------------------------------------


async def test_a_request_times_out_at_its_own_deadline_after_answered_ones() -> None:
    # The link's one timer is armed for the first request's deadline; it must neither fail
    # the later request then (too early) nor forget it (never).
    protocol, transport, _ = link()
    loop = asyncio.get_running_loop()
    for _ in range(50):
        answered = protocol.expect(2, timeout=0.1)
        protocol.data_received(b"\x15\x04")
        assert await answered == b"\x15\x04"
    await asyncio.sleep(0.05)  # the next request goes out halfway to the armed deadline
    asked_at = loop.time()
    late = protocol.expect(2, timeout=0.1)
    done, _ = await asyncio.wait({late}, timeout=5)
    assert late in done and isinstance(late.exception(), TimeoutError)
    assert loop.time() >= asked_at + 0.1
    assert not transport.aborted  # the caller decides what a timeout does to the link


async def test_a_shorter_timeout_after_a_longer_one_is_not_extended() -> None:
    protocol, _, _ = link()
    first = protocol.expect(2, timeout=3600.0)
    protocol.data_received(b"\x15\x04")
    await first
    second = protocol.expect(2, timeout=0.01)
    done, _ = await asyncio.wait({second}, timeout=5)  # not an hour
    assert second in done and isinstance(second.exception(), TimeoutError)


async def test_an_idle_link_keeps_no_deadline_and_a_lost_one_none_at_all() -> None:
    protocol, _, _ = link()
    waiter = protocol.expect(2, timeout=0.01)
    protocol.data_received(b"\x15\x04")
    await waiter
    # The timer armed for that request fires with nothing outstanding and is not re-armed.
    timer = protocol._deadline_timer
    assert timer is not None
    after_it: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_at(timer.when() + 0.001, after_it.set_result, None)
    await after_it
    assert protocol._deadline_timer is None
    pending = protocol.expect(2, timeout=3600.0)
    assert protocol._deadline_timer is not None
    protocol.connection_lost(None)
    assert protocol._deadline_timer is None
    with pytest.raises(Exception, match="connection lost before the reply"):
        await pending
