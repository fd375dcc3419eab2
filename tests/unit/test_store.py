"""The journal on a real SQLite file: rows, counters across restarts, filters, paging, failure."""

from __future__ import annotations

import time

import pytest

from carousel_gateway.fleet.events import (
    Channel,
    CommandAccepted,
    CommandRefused,
    ConnectionChanged,
    FaultCleared,
    FaultRaised,
    MoveCompleted,
    MoveFailed,
    Origin,
)
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.store import Journal

pytestmark = pytest.mark.asyncio

WMS = Origin(client="wms", channel=Channel.WS, request_id="r1", session_id=1)


def accepted(command_id: int, argument: int, at: float, machine: str = "m1") -> CommandAccepted:
    return CommandAccepted(
        machine,
        at,
        command_id=command_id,
        command=1,
        argument=argument,
        result="Comando ejecutado correctamente",
        skipped=False,
        origin=WMS,
        latency_s=0.004,
    )


async def flush(journal: Journal) -> None:
    await journal.flush()


async def test_commands_and_their_outcomes_are_journalled(tmp_path):
    journal = Journal(tmp_path / "j.db")
    await journal.start()
    t0 = time.time()
    await journal.record_command(accepted(1, 14, t0))
    journal.on_event(
        MoveCompleted("m1", t0 + 5, command_id=1, position=14, duration_s=5.0, origin=WMS)
    )
    await journal.record_command(accepted(2, 3, t0 + 6))
    journal.on_event(
        MoveFailed(
            "m1",
            t0 + 7,
            command_id=2,
            target=3,
            reasons=("PARADA_EMERGENCIA",),
            position=12,
            duration_s=1.0,
            origin=WMS,
        )
    )
    await journal.record_command(
        CommandRefused(
            "m1",
            t0 + 8,
            command_id=3,
            command=1,
            argument=3,
            code="MACHINE_NOT_READY",
            message="e-stop",
            reasons=("PARADA_EMERGENCIA",),
            origin=WMS,
        )
    )
    await flush(journal)
    page = await journal.history("m1", kinds=["command", "command_refused"])
    first, second = page.rows[2], page.rows[1]
    assert first["argument"] == 14 and first["client"] == "wms" and first["channel"] == "ws"
    assert first["outcome"] == "arrived" and first["duration_s"] == 5.0
    assert second["outcome"] == "failed" and second["reasons"] == ["PARADA_EMERGENCIA"]
    assert page.rows[0]["code"] == "MACHINE_NOT_READY"
    counters = await journal.counters("m1")
    assert counters["m1"]["moves_completed"] == 1
    assert counters["m1"]["moves_failed"] == 1
    assert counters["m1"]["seconds_in_motion"] == 6.0
    await journal.stop()


async def test_counters_survive_a_restart_and_history_filters_and_pages(tmp_path):
    path = tmp_path / "j.db"
    journal = Journal(path)
    await journal.start()
    t0 = time.time()
    for i in range(25):
        state = ConnectionState.CONNECTED if i % 2 else ConnectionState.DISCONNECTED
        journal.on_event(ConnectionChanged("m2", t0 + i, state=state, reason="test"))
    journal.on_event(FaultRaised("m2", t0 + 30, keys=("VFD",)))
    journal.on_event(FaultCleared("m2", t0 + 31, keys=("VFD",)))
    journal.on_event(FaultRaised("m1", t0 + 32, keys=("ALARMA",)))
    await journal.stop()

    reopened = Journal(path)
    await reopened.start()
    counters = await reopened.counters()
    assert counters["m2"]["disconnections"] == 13
    assert counters["m2"]["faults.VFD"] == 1
    assert counters["m1"]["faults.ALARMA"] == 1

    seen, cursor = [], None
    while True:
        page = await reopened.history(
            "m2", kinds=["connected", "disconnected"], limit=10, cursor=cursor
        )
        seen.extend(page.rows)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == 25
    assert [row["at"] for row in seen] == sorted((row["at"] for row in seen), reverse=True)
    window = await reopened.history("m2", since=t0 + 10, until=t0 + 14.5)
    assert [row["at"] - t0 for row in window.rows] == pytest.approx([14, 13, 12, 11, 10])
    everything = await reopened.history(kinds=["fault_raised"])
    assert {row["machine_id"] for row in everything.rows} == {"m1", "m2"}
    await reopened.stop()


async def test_unwritable_database_degrades_counts_drops_and_recovers(tmp_path):
    journal = Journal(tmp_path / "j.db")
    await journal.start()
    # A real SQLite write failure ("attempt to write a readonly database"), even as root.
    await journal._run(lambda: journal._conn().execute("PRAGMA query_only=ON"))
    journal.on_event(FaultRaised("m1", time.time(), keys=("ALARMA",)))
    await flush(journal)
    await journal.record_command(accepted(1, 5, time.time()))
    assert not journal.healthy and "readonly" in journal.last_error
    assert journal.dropped == 2
    await journal._run(lambda: journal._conn().execute("PRAGMA query_only=OFF"))
    journal.on_event(FaultRaised("m1", time.time(), keys=("VFD",)))
    await flush(journal)
    assert journal.healthy and journal.dropped == 2
    await journal.stop()
