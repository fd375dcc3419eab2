"""LinkSupervisor's bookkeeping, on an in-memory link (no sockets): failures counted once
per link, a stale link's failure leaving the current one alone, one wording for reasons."""

from __future__ import annotations

import asyncio

import pytest

from carousel_gateway.plc.errors import ConnectFailed, PlcNotConnected
from carousel_gateway.plc.resilience import Backoff, CircuitBreaker
from carousel_gateway.plc.supervisor import ConnectionState, LinkSupervisor, SupervisedLink

pytestmark = pytest.mark.asyncio


class MemoryLink(SupervisedLink):
    """A link with no transport: aborting it just ends it."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = 0

    def abort(self, reason: str) -> None:
        self.aborted += 1
        self.lost(reason)


class Opener:
    """Hands out fresh links (or refuses while ``refuse`` is set)."""

    def __init__(self) -> None:
        self.links: list[MemoryLink] = []
        self.refuse = False

    async def __call__(self) -> MemoryLink:
        if self.refuse:
            raise ConnectFailed("connect failed: refused")
        self.links.append(MemoryLink())
        return self.links[-1]


def supervisor(opener: Opener, threshold: int = 5) -> LinkSupervisor[MemoryLink]:
    return LinkSupervisor(
        opener,
        title="PLC",
        name="m1",
        backoff=Backoff(0.01, 0.01),
        breaker=CircuitBreaker(threshold, 60.0),
        task_name="test-link",
    )


async def connected(sup: LinkSupervisor[MemoryLink]) -> None:
    async with asyncio.timeout(5):
        while sup.state is not ConnectionState.CONNECTED:
            await sup.wait_state_change()


async def test_a_failure_is_counted_once_per_link_and_shown_at_once() -> None:
    opener = Opener()
    sup = supervisor(opener)
    sup.start()
    await connected(sup)
    link = sup.usable_link()

    sup.fail(link, "no reply within 1 s")
    sup.fail(link, "connection lost")  # the same link's second error

    assert sup.state is ConnectionState.DISCONNECTED
    assert sup.breaker.failures == 1
    assert sup.last_error == "no reply within 1 s"
    assert link.aborted == 1
    await sup.close()


async def test_a_stale_links_failure_leaves_the_current_link_alone() -> None:
    opener = Opener()
    sup = supervisor(opener)
    sup.start()
    await connected(sup)
    old = sup.usable_link()
    sup.succeeded()
    old.lost("closed by peer")
    await sup.wait_state_change()  # disconnected
    await connected(sup)

    sup.fail(old, "late error on the old link")

    assert sup.state is ConnectionState.CONNECTED
    assert sup.usable_link() is opener.links[-1] is not old
    await sup.close()
    assert opener.links[-1].closed.result() == "closed by the gateway"


async def test_reasons_name_the_link_the_same_way() -> None:
    opener = Opener()
    opener.refuse = True
    sup = supervisor(opener, threshold=1)
    sup.start()
    async with asyncio.timeout(5):
        while sup.state is not ConnectionState.ERROR:
            await sup.wait_state_change()

    with pytest.raises(PlcNotConnected) as refused:
        sup.usable_link()
    assert str(refused.value) == "PLC m1 unreachable (circuit open): connect failed: refused"
    await sup.close()
    assert sup.not_connected_reason() == "PLC m1 not connected: connect failed: refused"
