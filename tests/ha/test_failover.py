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

import pytest

pytest.importorskip(
    "carousel_gateway.ha.coordinator",
    reason="this gateway has no [ha] support yet (branch ha-core not merged)",
)

from .harness import Cell, GatewayProcess
from .processes import wait_for_events

pytestmark = pytest.mark.timeout(180)

#: A move long enough (20 buckets at 0.05 s) to kill its sender mid-way.
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
