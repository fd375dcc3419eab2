"""Failover of two gateway processes of one cell, with real faults: kill -9, a freeze
(SIGSTOP, then SIGCONT), a silent partition, PostgreSQL stopped at once. What must hold is
counted at the simulators (their log, from another process) and in ``move_intents``:
never two sessions on one PLC, no MOVE without an earlier committed intent of an epoch
its sender held, every orphaned intent ``lost`` exactly once, and a woken or cut-off
old active refuses commands and opens no PLC.

Lease timings are short (ttl 1.5 s, renew 0.3 s, margin 0.3 s), the PLCs release a
session after 0.3 s and (unless a test says otherwise) drop a silent one after 1 s.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

pytest.importorskip(
    "carousel_gateway.ha.coordinator",
    reason="this gateway has no [ha] support yet (branch ha-core not merged)",
)

from .harness import Cell, GatewayProcess, poll_until_async
from .processes import wait_for_events

pytestmark = pytest.mark.timeout(180)

#: A move long enough (20 buckets at 0.05 s; 0.15 s where a test freezes or cuts off the
#: sender, one step later than a kill) to stop its sender mid-way.
FAR = 21


def addresses(*gateways: GatewayProcess) -> dict[str, set[int]]:
    return {g.address: g.epochs for g in gateways}


async def refuses_not_active(gateway: GatewayProcess) -> None:
    reply = await gateway.move("m1", 3, wait=False)
    assert reply.status_code == 409, reply.text
    assert reply.json()["code"] == "NOT_ACTIVE"


async def moving_from(cell: Cell, gateway: GatewayProcess, machine: int) -> None:
    """Until the PLC ``machine`` has read a MOVE from ``gateway``."""
    await wait_for_events(
        cell.move_log,
        lambda events: any(
            e["event"] == "move"
            and e["machine"] == machine
            and str(e["peer"]).startswith(f"{gateway.address}:")
            for e in events
        ),
        what=f"a MOVE from {gateway.instance}",
    )


async def moving_to(cell: Cell, gateway: GatewayProcess, machine: int, target: int) -> None:
    """Until the PLC ``machine`` has read a MOVE to ``target`` (API numbering) from
    ``gateway``: the move is under way."""
    await wait_for_events(
        cell.move_log,
        lambda events: any(
            e["event"] == "move"
            and e["machine"] == machine
            and e["argument"] + 1 == target
            and str(e["peer"]).startswith(f"{gateway.address}:")
            for e in events
        ),
        what=f"a MOVE to {target} from {gateway.instance}",
    )


async def test_kill_9_of_the_active_the_standby_takes_over_and_moves(cell_factory) -> None:
    cell: Cell = await cell_factory()
    a, b, epoch = await cell.start_pair()
    assert (await a.move("m1", 5)).status_code == 200

    # A MOVE in flight when the active dies: its intent is orphaned.
    sending = asyncio.ensure_future(a.move("m1", FAR))
    await moving_from(cell, a, 1)
    await a.kill9()
    sending.cancel()

    ha = await b.wait_role("active")
    assert ha["epoch"] == epoch + 1
    await cell.wait_connected(b)
    reply = await b.move("m2", 7)
    assert reply.status_code == 200, reply.text

    facts = await cell.invariants()
    facts.assert_one_session_at_a_time()
    facts.assert_every_move_had_an_intent(addresses(a, b))
    assert facts.assert_orphans_lost_once(epoch) == 1
    assert facts.moves_from(b.address)


async def test_a_frozen_active_is_replaced_and_once_woken_refuses_and_opens_no_plc(
    cell_factory,
) -> None:
    cell: Cell = await cell_factory(idle_drop_s=1.0, seconds_per_position=0.15)
    a, b, epoch = await cell.start_pair()
    assert (await a.move("m1", 4)).status_code == 200

    # Frozen with a MOVE under way: its intent has no outcome when B takes over.
    sending = asyncio.ensure_future(a.move("m1", FAR))
    await moving_to(cell, a, 1, FAR)
    a.freeze()
    frozen_at = time.time()
    sending.cancel()
    ha = await b.wait_role("active")
    assert ha["epoch"] == epoch + 1
    # The PLCs dropped the frozen session (idle drop), released, and took B's.
    await cell.wait_connected(b)
    assert (await b.move("m2", 9)).status_code == 200  # m1 may still be on A's way

    a.thaw()
    thawed_at = time.time()
    woken = await poll_until_async(lambda: _role_not_active(a), 30, "gw-a answering and not active")
    assert woken in ("standby", "fenced")
    await refuses_not_active(a)
    assert (await b.move("m2", 6)).status_code == 200  # B still drives

    facts = await cell.invariants()
    facts.assert_one_session_at_a_time()
    facts.assert_every_move_had_an_intent(addresses(a, b))
    # Lost once, and the woken A's late outcome for it was refused by the fence.
    assert facts.assert_orphans_lost_once(epoch) == 1
    assert facts.sessions_from(a.address, after=thawed_at) == []
    assert facts.moves_from(a.address, after=frozen_at) == []
    assert (
        len([e for e in facts.events if e["event"] == "session_closed" and e["idle_dropped"]]) >= 2
    )


async def test_without_idle_drop_a_frozen_active_keeps_the_plcs_and_nothing_unsafe_happens(
    cell_factory,
) -> None:
    cell: Cell = await cell_factory(idle_drop_s=None)
    a, b, epoch = await cell.start_pair()
    assert (await a.move("m1", 4)).status_code == 200

    a.freeze()
    frozen_at = time.time()
    try:
        ha = await b.wait_role("active")  # the lease moves: the database decides it alone
    except TimeoutError:
        for row in await cell.database_activity():
            print("pg_stat_activity:", row)  # shown with the failure
        raise
    assert ha["epoch"] == epoch + 1
    # ...but the PLCs still hold the frozen session: B cannot reach them, so B's MOVE
    # fails and never reaches a PLC.
    reply = await b.move("m1", 12, wait=False)
    assert reply.status_code != 200, reply.text
    facts = await cell.invariants()
    assert facts.sessions_from(b.address) == []
    assert facts.moves_from(b.address) == []

    # A wakes up past its deadline: it fences itself, lets the PLCs go, and B gets them.
    a.thaw()
    await cell.wait_connected(b)
    await refuses_not_active(a)
    assert (await b.move("m1", 12)).status_code == 200

    facts = await cell.invariants()
    facts.assert_one_session_at_a_time()
    facts.assert_every_move_had_an_intent(addresses(a, b))
    assert facts.moves_from(a.address, after=frozen_at) == []
    assert not [e for e in facts.events if e["event"] == "session_closed" and e["idle_dropped"]]


async def test_an_active_cut_off_from_postgresql_and_the_plcs_is_replaced(cell_factory) -> None:
    cell: Cell = await cell_factory(idle_drop_s=1.0, seconds_per_position=0.15)
    a, b, epoch = await cell.start_pair()
    assert (await a.move("m1", 4)).status_code == 200

    # Cut off with a MOVE under way: its outcome cannot reach the database.
    sending = asyncio.ensure_future(a.move("m1", FAR))
    await moving_to(cell, a, 1, FAR)
    a.partition()
    cut_at = time.time()
    # Cut off, A fences itself at its own deadline, then stands by (its health still
    # answers: the REST port is not behind the proxy).
    await poll_until_async(lambda: _role_not_active(a), 30, "gw-a fenced")
    ha = await b.wait_role("active")
    assert ha["epoch"] == epoch + 1
    await cell.wait_connected(b)
    assert (await b.move("m2", 8)).status_code == 200
    await refuses_not_active(a)

    a.heal()
    healed_at = time.time()
    await poll_until_async(lambda: _standby_naming(a, "gw-b"), 30, "gw-a standby naming gw-b")
    await refuses_not_active(a)
    assert (await b.move("m1", 10)).status_code == 200

    # A answered its client (it waited for the arrival): not arrived, and why.
    reply = await sending
    assert reply.status_code != 200, reply.text
    print("the cut-off active's answer:", reply.status_code, reply.text)
    facts = await cell.invariants()
    facts.assert_one_session_at_a_time()
    facts.assert_every_move_had_an_intent(addresses(a, b))
    # Lost once, and A's outcome written after the heal was refused by the fence.
    assert facts.assert_orphans_lost_once(epoch) == 1
    assert facts.sessions_from(a.address, after=healed_at) == []
    assert facts.moves_from(a.address, after=cut_at) == []


async def test_an_active_cut_off_from_postgresql_only_lets_the_plcs_go_and_opens_none(
    cell_factory,
) -> None:
    """Only the database is out of reach: the PLCs still are. Fenced, A aborts its
    sessions and must not open them again while it stands down (its stand-down waits on
    the database): each PLC's single session is for B."""
    cell: Cell = await cell_factory(idle_drop_s=1.0)
    a, b, epoch = await cell.start_pair()
    assert (await a.move("m1", 4)).status_code == 200

    a.db_proxy.partition()
    cut_at = time.time()
    await poll_until_async(lambda: _role_not_active(a), 30, "gw-a fenced")
    ha = await b.wait_role("active")
    assert ha["epoch"] == epoch + 1
    await cell.wait_connected(b)
    assert (await b.move("m2", 8)).status_code == 200
    await refuses_not_active(a)

    a.db_proxy.heal()
    await poll_until_async(lambda: _standby_naming(a, "gw-b"), 30, "gw-a standby naming gw-b")
    assert (await b.move("m1", 10)).status_code == 200

    facts = await cell.invariants()
    facts.assert_one_session_at_a_time()
    facts.assert_every_move_had_an_intent(addresses(a, b))
    assert facts.sessions_from(a.address, after=cut_at) == []
    assert facts.moves_from(a.address, after=cut_at) == []


async def test_postgresql_stopped_at_once_the_active_fences_and_nothing_moves_until_it_is_back(
    cell_factory,
) -> None:
    cell: Cell = await cell_factory(idle_drop_s=1.0)
    a, b, epoch = await cell.start_pair()
    assert (await a.move("m1", 4)).status_code == 200

    await cell.stop_postgres()
    stopped_at = time.time()
    try:
        # Fenced (then standby, trying to take the lease again): either way, not active.
        await poll_until_async(lambda: _role_not_active(a), 30, "gw-a fenced")
        for gateway in (a, b):
            reply = await gateway.move("m1", 14, wait=False)
            assert reply.status_code == 409, reply.text
        assert (await b.health() or {}).get("ha", {}).get("role") != "active"
        assert cell.events() and not [
            e for e in cell.events() if e["event"] == "move" and e["at"] >= stopped_at
        ]
    finally:
        await cell.start_postgres()
    back_at = time.time()

    # Whichever instance takes the lease first drives again, with a new epoch.
    active = await poll_until_async(lambda: _active_of(a, b), 60, "an active instance again")
    ha = await active.wait_role("active")
    assert ha["epoch"] > epoch
    await cell.wait_connected(active)
    assert (await active.move("m1", 14)).status_code == 200

    facts = await cell.invariants()
    facts.assert_one_session_at_a_time()
    facts.assert_every_move_had_an_intent(addresses(a, b))
    moves = [e for e in facts.events if e["event"] == "move" and e["at"] >= stopped_at]
    assert moves and all(e["at"] >= back_at for e in moves)
    # Fenced, A opened no PLC session again while it stood down (its links were aborted
    # and held: the PLCs' single session is for the next active).
    assert [e for e in facts.sessions_from(a.address, after=stopped_at) if e["at"] < back_at] == []


async def test_a_planned_handover_waits_out_the_plc_release_without_opening_the_breaker(
    cell_factory,
) -> None:
    """A graceful stop hands the lease over at once, while each PLC still refuses new
    sessions for its release time (3 s here, the machine default breaker: 5 failures):
    the new active keeps retrying at its first backoff step and its circuit breaker never
    opens (its cooldown would be added to the takeover)."""
    cell: Cell = await cell_factory(release_time_s=3.0)
    a, b, epoch = await cell.start_pair()

    await a.terminate()
    ha = await b.wait_role("active")
    assert int(ha["epoch"]) == epoch + 1
    await cell.wait_connected(b)

    async with httpx.AsyncClient(timeout=10.0) as http:
        metrics = (await http.get(f"{b.url}/metrics")).text
    opened = [
        line
        for line in metrics.splitlines()
        if line.startswith("carousel_plc_breaker_opened_total")
    ]
    assert len(opened) == cell.settings.machines, metrics
    assert all(line.endswith(" 0.0") for line in opened), opened
    assert (await b.move("m1", 4)).status_code == 200


async def _role_not_active(gateway: GatewayProcess) -> str | None:
    data = await gateway.health()
    if data is None or data["ha"]["role"] == "active":
        return None
    return str(data["ha"]["role"])


async def _standby_naming(gateway: GatewayProcess, active: str) -> bool | None:
    data = await gateway.health()
    if data is None:
        return None
    ha = data["ha"]
    return True if ha["role"] == "standby" and ha["active_instance"] == active else None


async def _active_of(*gateways: GatewayProcess) -> GatewayProcess | None:
    for gateway in gateways:
        data = await gateway.health()
        if data is not None and data["ha"]["role"] == "active":
            return gateway
    return None
