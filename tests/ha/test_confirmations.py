"""Pick-line confirmations across a failover of two gateway processes (issue 18): an
operator confirms the presented lines of a long job one after another through the
project's client given both gateways' URLs, each confirmation with an id of its own, while
the active gateway is killed (kill -9), frozen (SIGSTOP, later SIGCONT) or cut off from
PostgreSQL and its PLCs (its API ports still reachable) in the middle.

The client sends a confirmation again, with the same id, across both URLs until it is
answered; the gateways answer only once a confirmation is committed to PostgreSQL, and
answer a retry of a stored one (also the instance that took over) with the stored result.
What must hold is read from PostgreSQL at the end: the confirmations acknowledged are
exactly the ones stored, each with the quantity the client sent, every stored one was sent
by the client, and none is stored twice.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

pytest.importorskip(
    "carousel_gateway.ha.coordinator",
    reason="this gateway has no [ha] support yet (branch ha-core not merged)",
)

from carousel_gateway.client import CarouselClient, CarouselError, ServerError

from .harness import Cell, GatewayProcess, poll_until_async

pytestmark = pytest.mark.timeout(240)

JOB = "CONF-1"
WORKSTATION = """
[[workstations]]
id = "station_1"
name = "Puesto 1"
machines = ["m1", "m2"]
"""


def _lines(count: int) -> list[tuple[str, int, int]]:
    """(machine, position, quantity) of each line; every fifth shares the bucket of the
    line before it (one stop, two lines)."""
    lines: list[tuple[str, int, int]] = []
    for n in range(1, count + 1):
        if n % 5 == 0:
            machine, position, _ = lines[-1]
        else:
            machine, position = f"m{1 + n % 2}", 1 + (n * 7) % 29
        lines.append((machine, position, 1 + n % 3))
    return lines


LINES = _lines(20)


def job_submission() -> dict[str, Any]:
    return {
        "job_id": JOB,
        "workstation_id": "station_1",
        "lines": [
            {"line_id": f"L{n:02d}", "machine_id": m, "position": p, "quantity": q}
            for n, (m, p, q) in enumerate(LINES, start=1)
        ],
    }


@dataclass
class Operator:
    """Confirms what the active gateway presents, through one client with both URLs."""

    client: CarouselClient
    gateways: tuple[GatewayProcess, ...]
    #: confirmation_id -> (line_id, quantity_picked, reason), recorded before the first send.
    sent: dict[str, tuple[str, int, str | None]] = field(default_factory=dict)
    #: confirmation_id -> quantity_picked of the line in the answer.
    acked: dict[str, int] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # line_id -> its confirmation's id
    refusals: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)  # pause reasons the operator resumed
    #: Run once, right after the confirmation number ``fault_at`` is handed to the client.
    fault: Callable[[], Awaitable[None]] | None = None
    fault_at: int = 0
    sends: int = 0

    async def run(self) -> None:
        while len(self.acked) < len(LINES):
            lines = await poll_until_async(self._look, 60, "a line to confirm")
            for line in lines:
                await self._confirm(line)

    async def _look(self) -> list[dict[str, Any]] | None:
        """Lines to confirm now (presented, or stored with our id yet not acknowledged), as
        the active gateway shows the job; None while there are none."""
        job = await self._job()
        if job is None:
            return None
        if job["state"] == "paused":  # a lost MOVE (failover_move_lost) or a refused one
            try:
                await self.client.resume_job(JOB)
            except CarouselError as error:
                self.refusals.append(f"resume: {error}")
                return None
            self.resumed.append(str(job["paused_reason"]))
            return None
        todo = [
            line
            for line in job["lines"]
            if self.ids.get(line["line_id"]) not in self.acked
            and (
                line["state"] == "presented"
                or (line["confirmation_id"] is not None and line["confirmation_id"] in self.sent)
            )
        ]
        return todo or None

    async def _job(self) -> dict[str, Any] | None:
        for gateway in self.gateways:
            data = await gateway.health()
            if data is None or data["ha"]["role"] != "active":
                continue
            try:
                async with httpx.AsyncClient(timeout=2.0) as http:
                    reply = await http.get(f"{gateway.url}/v1/jobs/{JOB}")
            except httpx.HTTPError:
                continue
            if reply.status_code == 200:
                job: dict[str, Any] = reply.json()["data"]
                return job
        return None

    async def _confirm(self, line: dict[str, Any]) -> None:
        line_id = line["line_id"]
        confirmation_id = self.ids.setdefault(line_id, f"{line_id}-{uuid.uuid4().hex}")
        if confirmation_id in self.sent:
            _, quantity, reason = self.sent[confirmation_id]  # a retry: the same content
        else:
            short = int(line_id[1:]) % 4 == 0
            quantity = line["quantity"] - 1 if short else line["quantity"]
            reason = "damaged" if short else None
            self.sent[confirmation_id] = (line_id, quantity, reason)
        confirming = asyncio.ensure_future(
            self.client.confirm_pick(
                JOB, line_id, quantity, reason, confirmation_id=confirmation_id, deadline_s=30
            )
        )
        self.sends += 1
        if self.fault is not None and self.sends == self.fault_at:
            await asyncio.sleep(0)  # let the client write it: the fault lands mid-flight
            await asyncio.sleep(0)
            await self.fault()
        try:
            reply = await confirming
        except ServerError as error:
            # Not presented (yet) on the instance that took over: looked at again later.
            if error.code != "INVALID_COMMAND":
                raise
            self.refusals.append(f"{line_id}: {error}")
            return
        except CarouselError as error:  # no answer within the deadline: looked at again
            self.refusals.append(f"{line_id}: {error!r}")
            return
        stored = next(ln for ln in reply.job.lines if ln.line_id == line_id)
        assert stored.confirmation_id == confirmation_id, (stored, confirmation_id)
        self.acked[confirmation_id] = int(stored.quantity_picked or 0)


def stored_rows(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as connection:
        lines = connection.execute(
            "SELECT line_id, state, quantity_picked, reason, confirmation_id FROM pick_lines "
            "WHERE job_id = %s ORDER BY idx",
            (JOB,),
        ).fetchall()
        history = connection.execute(
            "SELECT line_id, quantity, reason, confirmation_id, epoch FROM pick_history "
            "WHERE job_id = %s AND what = 'line_confirmed' ORDER BY id",
            (JOB,),
        ).fetchall()
        job = connection.execute("SELECT state FROM pick_jobs WHERE job_id = %s", (JOB,)).fetchone()
    return lines, history, job["state"] if job else ""


async def assert_acknowledged_equals_stored(cell: Cell, operator: Operator, epoch: int) -> None:
    """What PostgreSQL holds at the end against what the client sent and was answered;
    the first active (``epoch``) stored some of the confirmations, its successor the rest."""
    lines, history, state = await asyncio.to_thread(stored_rows, cell.journal_url)
    assert {row["epoch"] for row in history} == {epoch, epoch + 1}, history
    confirmed = [row for row in lines if row["state"] in ("picked", "short")]
    stored = {row["confirmation_id"]: row for row in confirmed}
    # Every stored confirmation was sent by the client, with what it sent.
    assert len(stored) == len(confirmed) and None not in stored, confirmed
    for confirmation_id, row in stored.items():
        line_id, quantity, reason = operator.sent[confirmation_id]
        assert (row["line_id"], row["quantity_picked"]) == (line_id, quantity), row
        assert row["reason"] == (reason if quantity < _asked(line_id) else None), row
    # Acknowledged = stored, each with the quantity the client sent.
    assert set(operator.acked) <= set(stored)
    assert set(operator.acked) == set(stored)
    for confirmation_id, quantity in operator.acked.items():
        assert quantity == operator.sent[confirmation_id][1] == stored[confirmation_id][
            "quantity_picked"
        ]
    # None stored twice: one line_confirmed record per line, with that line's id.
    counts = collections.Counter(row["line_id"] for row in history)
    assert counts and max(counts.values()) == 1, counts
    assert {row["confirmation_id"] for row in history} == set(stored)
    assert len(confirmed) == len(LINES) and state == "completed"


def _asked(line_id: str) -> int:
    return LINES[int(line_id[1:]) - 1][2]


async def start(cell_factory: Any) -> tuple[Cell, GatewayProcess, GatewayProcess, int]:
    cell: Cell = await cell_factory(extra_config=WORKSTATION)
    a, b, epoch = await cell.start_pair()
    async with httpx.AsyncClient(timeout=10.0) as http:
        reply = await http.post(f"{a.url}/v1/jobs", json=job_submission())
    assert reply.status_code == 201, reply.text
    return cell, a, b, epoch


def client_of(*gateways: GatewayProcess) -> CarouselClient:
    return CarouselClient(
        [f"ws://{g.address}:{g.ws_port}" for g in gateways],
        request_timeout=2.0,
        backoff_initial=0.1,
        backoff_max=0.5,
    )


async def test_confirmations_survive_a_kill_9_of_the_active(cell_factory) -> None:
    cell, a, b, epoch = await start(cell_factory)

    async def kill() -> None:
        await a.kill9()

    async with client_of(a, b) as client:
        operator = Operator(client, (a, b), fault=kill, fault_at=7)
        await operator.run()
        print("sends", operator.sends, "refusals:", operator.refusals, "resumed:", operator.resumed)
        ha = await b.wait_role("active")
        assert ha["epoch"] == epoch + 1
        # A confirmation gw-a committed and answered, sent again: gw-b answers it from the
        # store (the job is completed by now), and refuses its id with other content.
        first = operator.ids["L01"]
        _, quantity, reason = operator.sent[first]
        again = await client.confirm_pick(JOB, "L01", quantity, reason, confirmation_id=first)
        assert again.job.lines[0].confirmation_id == first
        assert again.job.lines[0].quantity_picked == quantity
        with pytest.raises(ServerError) as conflict:
            await client.confirm_pick(JOB, "L02", quantity, reason, confirmation_id=first)
        assert conflict.value.code == "JOB_CONFLICT"
    await assert_acknowledged_equals_stored(cell, operator, epoch)
    facts = await cell.invariants()
    facts.assert_one_session_at_a_time()
    facts.assert_every_move_had_an_intent({g.address: g.epochs for g in (a, b)})


async def test_confirmations_survive_a_frozen_active_that_wakes_up(cell_factory) -> None:
    cell, a, b, epoch = await start(cell_factory)

    async def freeze() -> None:
        a.freeze()

    async with client_of(a, b) as client:
        operator = Operator(client, (a, b), fault=freeze, fault_at=7)
        running = asyncio.ensure_future(operator.run())
        try:
            # Once B drives and has answered confirmations of its own, the old active wakes.
            await poll_until_async(
                lambda: _after(operator, running, 11), 120, "confirmations answered by gw-b"
            )
            a.thaw()
            await running
        finally:
            running.cancel()
            a.thaw()
    print("sends", operator.sends, "refusals:", operator.refusals, "resumed:", operator.resumed)
    ha = await b.wait_role("active")
    assert ha["epoch"] == epoch + 1
    await poll_until_async(lambda: _not_active(a), 30, "gw-a awake and not active")
    await assert_acknowledged_equals_stored(cell, operator, epoch)
    facts = await cell.invariants()
    facts.assert_one_session_at_a_time()
    facts.assert_every_move_had_an_intent({g.address: g.epochs for g in (a, b)})


async def _after(operator: Operator, running: asyncio.Future[None], count: int) -> bool | None:
    if running.done():
        running.result()  # its failure, if any
        return True
    return True if len(operator.acked) >= count else None


async def _not_active(gateway: GatewayProcess) -> bool | None:
    data = await gateway.health()
    return True if data is not None and data["ha"]["role"] != "active" else None


async def test_confirmations_survive_an_active_cut_off_from_postgresql_and_the_plcs(
    cell_factory,
) -> None:
    cell, a, b, epoch = await start(cell_factory)

    async def cut() -> None:
        a.partition()  # its WebSocket and REST ports still answer: the client reaches it

    async with client_of(a, b) as client:
        operator = Operator(client, (a, b), fault=cut, fault_at=7)
        running = asyncio.ensure_future(operator.run())
        try:
            await poll_until_async(
                lambda: _after(operator, running, 11), 120, "confirmations answered by gw-b"
            )
            a.heal()
            await running
        finally:
            running.cancel()
            a.heal()
    print("sends", operator.sends, "refusals:", operator.refusals, "resumed:", operator.resumed)
    ha = await b.wait_role("active")
    assert ha["epoch"] == epoch + 1
    await poll_until_async(lambda: _not_active(a), 30, "gw-a not active")
    await assert_acknowledged_equals_stored(cell, operator, epoch)
    facts = await cell.invariants()
    facts.assert_one_session_at_a_time()
    facts.assert_every_move_had_an_intent({g.address: g.epochs for g in (a, b)})
