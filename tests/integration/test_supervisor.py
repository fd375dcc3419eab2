"""The one reconnect loop (plc/supervisor.py) behind both PLC links, over loopback.

Every behaviour runs against the port-3200 link and the Modbus link alike, each talking to
its simulator over a real socket: a refused link, a link dropped mid-session, the breaker
opening, backoff, closing during a reconnect, and waiting for state changes. Tests wait on
state changes and recorded backoff attempts; timeouts are only a safety net.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from random import Random
from typing import Any

import pytest

from carousel_gateway.plc.connection import (
    ConnectionSettings,
    ConnectionState,
    PlcConnection,
    PlcNotConnected,
    PlcTimeout,
)
from carousel_gateway.plc.modbus import ModbusSettings, ModbusTelemetry
from carousel_gateway.plc.resilience import Backoff
from carousel_gateway.sim.modbus_server import ModbusSimulatorServer
from carousel_gateway.sim.server import FaultMode, LinkAction, SimulatorServer

pytestmark = pytest.mark.asyncio

SAFETY_S = 5.0
DOWN = (ConnectionState.DISCONNECTED, ConnectionState.ERROR)


@dataclass(frozen=True)
class RecordingBackoff(Backoff):
    """Backoff's real delays, plus the attempt number each one was asked for."""

    attempts: list[int] = field(default_factory=list)
    recorded: asyncio.Event = field(default_factory=asyncio.Event)

    def delay(self, attempt: int, rng: Random | None = None) -> float:
        self.attempts.append(attempt)
        self.recorded.set()
        return super().delay(attempt, rng)

    async def wait_attempts(self, count: int) -> None:
        async with asyncio.timeout(SAFETY_S):
            while len(self.attempts) < count:
                self.recorded.clear()
                await self.recorded.wait()


@dataclass
class Link:
    """One link under test, its simulator's switches, and what it reported."""

    title: str
    connection: PlcConnection | ModbusTelemetry
    exchange: Callable[[], Awaitable[object]]
    go_down: Callable[[], Awaitable[None]]  # switched off: link dropped, connects refused
    go_up: Callable[[], Awaitable[None]]
    stall: Callable[[bool], None]  # keep the connection, stop answering (or answer again)
    backoff: RecordingBackoff
    states: list[tuple[ConnectionState, str | None]] = field(default_factory=list)

    async def wait_state(self, *wanted: ConnectionState) -> ConnectionState:
        async with asyncio.timeout(SAFETY_S):
            while self.connection.state not in wanted:
                await self.connection.wait_state_change()
        return self.connection.state


LinkFactory = Callable[..., Awaitable[Link]]


@pytest.fixture(params=["port3200", "modbus"])
async def make_link(
    request: pytest.FixtureRequest, simulator_factory: Callable[..., Any]
) -> AsyncIterator[LinkFactory]:
    kind: str = request.param
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def make(
        *,
        up: bool = True,
        backoff: RecordingBackoff | None = None,
        breaker_threshold: int = 50,
        breaker_cooldown_s: float = 0.3,
    ) -> Link:
        backoff = backoff or RecordingBackoff(initial_s=0.02, maximum_s=0.2)
        timings: dict[str, Any] = {
            "connect_timeout_s": 0.5,
            "request_timeout_s": 0.3,
            "backoff": backoff,
            "breaker_threshold": breaker_threshold,
            "breaker_cooldown_s": breaker_cooldown_s,
        }
        states: list[tuple[ConnectionState, str | None]] = []

        def record(state: ConnectionState, reason: str | None) -> None:
            states.append((state, reason))

        sim: SimulatorServer = await simulator_factory(single_session=kind == "port3200")
        if kind == "port3200":
            plc = PlcConnection(
                ConnectionSettings("127.0.0.1", sim.port, positions=30, **timings),
                name="m1",
                on_state_change=record,
            )

            async def plc_down() -> None:
                sim.set_fault_mode(FaultMode.REFUSE)

            async def plc_up() -> None:
                sim.set_fault_mode(FaultMode.NONE)

            def plc_stall(stalled: bool) -> None:
                sim.link(LinkAction.STALL if stalled else LinkAction.RESUME)

            link = Link("PLC", plc, plc.status, plc_down, plc_up, plc_stall, backoff, states)
        else:
            modbus_sim = ModbusSimulatorServer(sim.model)
            await modbus_sim.start()
            cleanups.append(modbus_sim.stop)
            modbus = ModbusTelemetry(
                ModbusSettings("127.0.0.1", modbus_sim.port, **timings),
                name="m1/modbus",
                on_state_change=record,
            )
            link = Link(
                "Modbus",
                modbus,
                modbus.read,
                modbus_sim.stop,
                modbus_sim.start,
                modbus_sim.stall,
                backoff,
                states,
            )
        cleanups.insert(0, link.connection.close)
        if not up:
            await link.go_down()
        return link

    yield make
    for cleanup in cleanups:
        await cleanup()


async def test_a_refused_link_says_why_and_connects_once_the_plc_listens(make_link):
    link = await make_link(up=False)
    link.connection.start()
    await link.backoff.wait_attempts(1)

    assert link.connection.state is ConnectionState.DISCONNECTED
    assert "connect" in (link.connection.last_error or "")
    with pytest.raises(PlcNotConnected, match=f"^{link.title} m1(/modbus)? not connected"):
        await link.exchange()

    await link.go_up()
    await link.wait_state(ConnectionState.CONNECTED)
    await link.exchange()
    assert (link.connection.connects, link.connection.reconnects) == (1, 0)
    assert link.connection.last_error is None


async def test_a_link_dropped_mid_session_is_re_established(make_link):
    link = await make_link()
    link.connection.start()
    await link.wait_state(ConnectionState.CONNECTED)
    await link.exchange()

    await link.go_down()
    await link.wait_state(*DOWN)
    with pytest.raises(PlcNotConnected):
        await link.exchange()
    await link.go_up()
    await link.wait_state(ConnectionState.CONNECTED)
    await link.exchange()

    assert link.connection.reconnects == 1
    assert [state for state, _ in link.states][:2] == [
        ConnectionState.CONNECTED,
        ConnectionState.DISCONNECTED,
    ]


async def test_backoff_grows_while_refused_and_restarts_after_a_link_that_worked(make_link):
    link = await make_link(up=False)
    link.connection.start()
    await link.backoff.wait_attempts(3)
    assert link.backoff.attempts[:3] == [1, 2, 3]

    await link.go_up()
    await link.wait_state(ConnectionState.CONNECTED)
    await link.exchange()
    before = len(link.backoff.attempts)
    await link.go_down()
    await link.backoff.wait_attempts(before + 1)

    assert link.backoff.attempts[before] == 1  # the link worked: counting starts over


async def test_the_breaker_opens_on_repeated_failures_and_closes_on_a_good_exchange(make_link):
    link = await make_link(up=False, breaker_threshold=2)
    link.connection.start()
    await link.wait_state(ConnectionState.ERROR)

    assert link.connection.breaker.times_opened == 1
    with pytest.raises(PlcNotConnected, match="unreachable \\(circuit open\\)"):
        await link.exchange()

    await link.go_up()  # the trial after the cooldown succeeds
    await link.wait_state(ConnectionState.CONNECTED)
    await link.exchange()
    assert not link.connection.breaker.is_open_or_trial
    assert link.connection.breaker.failures == 0


async def test_expected_refusals_after_a_takeover_neither_back_off_nor_open_the_breaker(
    make_link,
):
    """A takeover: the PLC refuses until the old session is gone; the attempts stay at
    the first backoff step and the breaker stays shut, so it connects at the next step."""
    link = await make_link(up=False, breaker_threshold=2, breaker_cooldown_s=60.0)
    link.connection.supervisor.breaker.record_failure(0.0)  # an earlier spell's failure
    link.connection.supervisor.expect_refusals(60.0)
    link.connection.start()
    await link.backoff.wait_attempts(5)

    assert set(link.backoff.attempts) == {1}
    assert link.connection.state is ConnectionState.DISCONNECTED
    assert link.connection.breaker.times_opened == 0
    await link.go_up()
    await link.wait_state(ConnectionState.CONNECTED)
    await link.exchange()
    assert ConnectionState.ERROR not in [state for state, _ in link.states]


async def test_once_the_expected_refusals_are_over_the_breaker_counts_again(make_link):
    link = await make_link(up=False, breaker_threshold=2, breaker_cooldown_s=60.0)
    link.connection.supervisor.expect_refusals(0.0)
    link.connection.start()
    await link.wait_state(ConnectionState.ERROR)

    assert link.connection.breaker.times_opened == 1


async def test_a_timed_out_exchange_reports_the_link_down_at_once(make_link):
    link = await make_link()
    link.connection.start()
    await link.wait_state(ConnectionState.CONNECTED)
    await link.exchange()

    link.stall(True)
    with pytest.raises(PlcTimeout):
        await link.exchange()
    # Before the supervisor task runs again: nobody queued behind uses the dead link.
    assert link.connection.state is ConnectionState.DISCONNECTED
    assert link.states[-1] == (ConnectionState.DISCONNECTED, link.connection.last_error)
    with pytest.raises(PlcNotConnected):
        await link.exchange()

    link.stall(False)
    await link.wait_state(ConnectionState.CONNECTED)
    await link.exchange()
    assert link.connection.reconnects == 1


@pytest.mark.parametrize("phase", ["backoff", "circuit_open"])
async def test_close_during_a_reconnect_wait_returns_at_once(make_link, phase):
    # Waits of a minute: close() must cancel them, not sit them out.
    slow = RecordingBackoff(initial_s=60.0, maximum_s=60.0)
    threshold = 1 if phase == "circuit_open" else 50
    link = await make_link(
        up=False, backoff=slow, breaker_threshold=threshold, breaker_cooldown_s=60.0
    )
    link.connection.start()
    await link.backoff.wait_attempts(1)

    async with asyncio.timeout(SAFETY_S):
        await link.connection.close()

    assert link.connection.state is ConnectionState.DISCONNECTED
    if phase == "circuit_open":
        assert link.states[-1] == (ConnectionState.DISCONNECTED, "closed by the gateway")
    with pytest.raises(PlcNotConnected):
        await link.exchange()


async def test_wait_state_change_wakes_on_each_change(make_link):
    link = await make_link()
    first = asyncio.create_task(link.connection.wait_state_change())
    await asyncio.sleep(0)  # let it start waiting (a yield, not a delay)
    link.connection.start()
    async with asyncio.timeout(SAFETY_S):
        assert await first is ConnectionState.CONNECTED

    second = asyncio.create_task(link.connection.wait_state_change())
    await asyncio.sleep(0)
    await link.go_down()
    async with asyncio.timeout(SAFETY_S):
        assert await second in DOWN


async def test_both_links_log_state_changes_in_one_wording(make_link, caplog):
    caplog.set_level(logging.DEBUG, logger="carousel_gateway.plc.supervisor")
    link = await make_link()
    link.connection.start()
    await link.wait_state(ConnectionState.CONNECTED)
    await link.connection.close()

    lines = [r.getMessage() for r in caplog.records if r.name == "carousel_gateway.plc.supervisor"]
    name = link.connection.name
    assert lines == [
        f"{link.title} {name} connected",
        f"{link.title} {name} disconnected: closed by the gateway",
    ]


async def test_stop_frees_a_single_session_plc_for_the_next_link(simulator_factory):
    sim = await simulator_factory(single_session=True)
    settings = ConnectionSettings(
        "127.0.0.1", sim.port, connect_timeout_s=0.5, backoff=Backoff(0.02, 0.2)
    )
    first = PlcConnection(settings, name="m1")
    first.start()
    async with asyncio.timeout(SAFETY_S):
        while first.state is not ConnectionState.CONNECTED:
            await first.wait_state_change()
    await first.status()

    await first.close()
    second = PlcConnection(settings, name="m1")
    second.start()
    try:
        async with asyncio.timeout(SAFETY_S):
            while second.state is not ConnectionState.CONNECTED:
                await second.wait_state_change()
        await second.status()
        assert sim.connections_accepted == 2
    finally:
        await second.close()
