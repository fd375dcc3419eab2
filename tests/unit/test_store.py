"""The journal on each engine (a real SQLite file, a real PostgreSQL server): rows, counters
across restarts, filters, paging, failure."""

from __future__ import annotations

import asyncio
import time

import pytest

from carousel_gateway.fleet.events import (
    CommandAccepted,
    CommandRefused,
    ConnectionChanged,
    FaultCleared,
    FaultRaised,
    MoveCompleted,
    MoveFailed,
    Origin,
    OriginChannel,
)
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.plc.supervisor import CLOSED_BY_GATEWAY
from carousel_gateway.store import Journal

pytestmark = pytest.mark.asyncio

WMS = Origin(client="wms", channel=OriginChannel.WS, request_id="r1")


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


async def read_only(journal: Journal, on: bool) -> None:
    """Make the journal's own connection refuse writes (or accept them again)."""

    def switch() -> None:
        db = journal._conn()
        if db.engine == "sqlite":
            db.execute(f"PRAGMA query_only={'ON' if on else 'OFF'}")
        else:
            db.execute(f"SET default_transaction_read_only = {'on' if on else 'off'}")

    await journal._run(switch)


async def test_commands_and_their_outcomes_are_journalled(journal_target):
    journal = Journal(journal_target)
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


async def test_counters_survive_a_restart_and_history_filters_and_pages(journal_target):
    journal = Journal(journal_target)
    await journal.start()
    t0 = time.time()
    for i in range(25):
        state = ConnectionState.CONNECTED if i % 2 else ConnectionState.DISCONNECTED
        journal.on_event(ConnectionChanged("m2", t0 + i, state=state, reason="test"))
    journal.on_event(FaultRaised("m2", t0 + 30, keys=("VFD",)))
    journal.on_event(FaultCleared("m2", t0 + 31, keys=("VFD",)))
    journal.on_event(FaultRaised("m1", t0 + 32, keys=("ALARMA",)))
    await journal.stop()

    reopened = Journal(journal_target)
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


async def test_unwritable_database_degrades_counts_drops_and_recovers(journal_target):
    journal = Journal(journal_target)
    await journal.start()
    # A real write failure, even as root: SQLite's "attempt to write a readonly database",
    # PostgreSQL's "cannot execute INSERT in a read-only transaction".
    await read_only(journal, True)
    journal.on_event(FaultRaised("m1", time.time(), keys=("ALARMA",)))
    await flush(journal)
    await journal.record_command(accepted(1, 5, time.time()))
    assert not journal.healthy
    assert "readonly" in journal.last_error or "read-only" in journal.last_error
    assert journal.dropped == 2
    await read_only(journal, False)
    journal.on_event(FaultRaised("m1", time.time(), keys=("VFD",)))
    await flush(journal)
    assert journal.healthy and journal.dropped == 2
    await journal.stop()


async def test_any_failed_command_write_is_dropped_and_reported(journal_target):
    """Not only SQLite errors: a value no column can hold fails the insert too."""
    journal = Journal(journal_target)
    await journal.start()
    await journal.record_command(accepted(1, 2**63, time.time()))  # past a 64-bit column
    assert journal.dropped == 1
    assert not journal.healthy
    assert "OverflowError" in journal.last_error or "out of range" in journal.last_error
    await journal.record_command(accepted(2, 5, time.time()))
    assert journal.healthy and journal.dropped == 1
    page = await journal.history("m1")
    assert [row["command_id"] for row in page.rows] == [2]
    await journal.stop()


async def test_any_failed_event_write_is_dropped_and_the_writer_goes_on(journal_target):
    journal = Journal(journal_target)
    await journal.start()
    if isinstance(journal_target, str):
        # PostgreSQL text holds no NUL character: the insert fails (a DataError).
        bad = FaultRaised("m\x00", time.time(), keys=("ALARMA",))
    else:
        # SQLite binds the command id as an INTEGER: the batch fails with an OverflowError.
        bad = MoveCompleted(
            "m1", time.time(), command_id=2**63, position=3, duration_s=1.0, origin=WMS
        )
    journal.on_event(bad)
    await flush(journal)
    assert journal.dropped == 1 and not journal.healthy
    journal.on_event(FaultRaised("m1", time.time(), keys=("ALARMA",)))
    await flush(journal)  # the writer is still alive: this returns, and the row is there
    assert journal.healthy and journal.dropped == 1
    page = await journal.history("m1")
    assert [row["kind"] for row in page.rows] == ["fault_raised"]
    await journal.stop()


@pytest.mark.parametrize(
    ("command", "argument", "raw"),
    [
        (2**64 + 1, None, {"raw_command": str(2**64 + 1)}),
        (1, -(2**63) - 1, {"raw_argument": str(-(2**63) - 1)}),
        ("1", 2.5, {"raw_command": '"1"', "raw_argument": "2.5"}),
        (1, {"deep": [1, 2, 3]}, {"raw_argument": '{"deep": [1, 2, 3]}'}),
        (1, "x" * 500, {"raw_argument": '"' + "x" * 62 + "…"}),
    ],
)
async def test_refused_values_no_column_holds_are_kept_as_text(
    journal_target, command, argument, raw
):
    journal = Journal(journal_target)
    await journal.start()
    await journal.record_command(
        CommandRefused(
            "m1",
            time.time(),
            command_id=1,
            command=command,
            argument=argument,
            code="INVALID_COMMAND",
            message="bad",
            reasons=(),
            origin=WMS,
        )
    )
    assert journal.healthy and journal.dropped == 0
    (row,) = (await journal.history("m1")).rows
    assert {k: v for k, v in row.items() if k.startswith("raw_")} == raw
    assert ("command" in row) == ("raw_command" not in raw)
    assert ("argument" in row) == (argument is not None and "raw_argument" not in raw)
    await journal.stop()


async def test_refusal_without_reasons_reads_back_as_an_empty_list(journal_target):
    journal = Journal(journal_target)
    await journal.start()
    for command_id, reasons in ((1, ()), (2, ("READY", "PARADA_EMERGENCIA"))):
        await journal.record_command(
            CommandRefused(
                "m1",
                time.time(),
                command_id=command_id,
                command=1,
                argument=99,
                code="INVALID_COMMAND",
                message="position 99 is outside 1..30 on m1",
                reasons=reasons,
                origin=WMS,
            )
        )
    # A row from before the fix (reasons stored as "") reads back as [] as well.
    await journal._run(
        lambda: journal._conn().execute("UPDATE journal SET reasons = '' WHERE command_id = 1")
    )
    rows = {row["command_id"]: row for row in (await journal.history("m1")).rows}
    assert rows[1]["reasons"] == []
    assert rows[2]["reasons"] == ["READY", "PARADA_EMERGENCIA"]
    await journal.stop()


async def test_counts_are_ints_and_seconds_floats(journal_target):
    journal = Journal(journal_target)
    await journal.start()
    t0 = time.time()
    await journal.record_command(accepted(1, 4, t0))
    journal.on_event(
        MoveCompleted("m1", t0 + 1, command_id=1, position=4, duration_s=1.5, origin=WMS)
    )
    journal.on_event(FaultRaised("m1", t0 + 2, keys=("VFD",)))
    await flush(journal)
    counters = (await journal.counters())["m1"]
    assert counters["moves_completed"] == 1 and type(counters["moves_completed"]) is int
    assert type(counters["faults.VFD"]) is int
    assert counters["seconds_in_motion"] == 1.5
    assert isinstance(counters["seconds_in_motion"], float)
    await journal.stop()


async def test_the_gateway_closing_its_own_link_is_no_disconnection(journal_target):
    journal = Journal(journal_target)
    await journal.start()
    t0 = time.time()
    journal.on_event(ConnectionChanged("m1", t0, state=ConnectionState.CONNECTED))
    journal.on_event(
        ConnectionChanged(
            "m1", t0 + 1, state=ConnectionState.DISCONNECTED, reason=CLOSED_BY_GATEWAY
        )
    )
    journal.on_event(
        ConnectionChanged("m2", t0 + 1, state=ConnectionState.DISCONNECTED, reason="timeout")
    )
    await flush(journal)
    counters = await journal.counters()
    assert "disconnections" not in counters.get("m1", {})
    assert counters["m2"]["disconnections"] == 1
    # The link's closing is still in the journal, only not counted.
    kinds = [row["kind"] for row in (await journal.history("m1")).rows]
    assert kinds == ["disconnected", "connected"]
    await journal.stop()


async def test_a_lost_postgresql_server_degrades_the_journal_until_it_is_back():
    """A server of its own, stopped and started under the journal: the writes meanwhile are
    dropped and counted, and the journal reconnects by itself at the next write."""
    from tests.postgresql.server import PostgresServer

    server = PostgresServer()
    await asyncio.to_thread(server.start)
    try:
        journal = Journal(server.url, reopen_interval_s=0)  # a reconnection at every write
        await journal.start()
        await journal.record_command(accepted(1, 5, time.time()))
        await asyncio.to_thread(server.stop_keeping_data)
        await journal.record_command(accepted(2, 6, time.time()))  # the connection breaks
        await journal.record_command(accepted(3, 6, time.time()))  # reopening fails
        assert not journal.healthy and journal.dropped == 2
        assert "cannot connect" in journal.last_error
        await asyncio.to_thread(server.start_again)
        await journal.record_command(accepted(4, 7, time.time()))
        assert journal.healthy and journal.dropped == 2
        page = await journal.history("m1")
        assert [row["command_id"] for row in page.rows] == [4, 1]
        await journal.stop()
    finally:
        await asyncio.to_thread(server.stop)
