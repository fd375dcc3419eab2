"""The CLI's tables on a narrow (80-column) terminal: machine ids are never cut, refusals
without reasons show no "()", counts print as integers."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from carousel_gateway.cli_views import history_table, status_table
from carousel_gateway.wire import Counters, History, HistoryEntry, MachineInfo, MachineState

IDS = ["carousel_north_aisle_1", "carousel_north_aisle_2"]


def render(renderable: Any, width: int = 80) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def info(machine_id: str) -> MachineInfo:
    return MachineInfo(
        id=machine_id,
        name="Carrusel Principal de la nave norte",
        ip="127.0.0.1",
        port=3200,
        type="Simulator",
        positions=30,
        position_base=1,
    )


def state() -> MachineState:
    return MachineState(
        status=None,
        position=12,
        raw_status=21,
        connection_status="connected",
        last_update="2026-12-05T08:00:00.000Z",
    )


def test_status_table_keeps_whole_ids_at_80_columns():
    text = render(status_table({m: state() for m in IDS}, [info(m) for m in IDS]))
    assert max(len(line) for line in text.splitlines()) <= 80
    for machine_id in IDS:
        assert machine_id in text


def entry(machine_id: str, entry_id: int, **extra: Any) -> HistoryEntry:
    return HistoryEntry(
        id=entry_id,
        timestamp="2026-12-05T08:00:00.000Z",
        machine_id=machine_id,
        **extra,
    )


def test_history_table_keeps_whole_ids_and_shows_no_empty_reasons():
    page = History(
        entries=[
            entry(
                IDS[0],
                3,
                kind="command_refused",
                command=1,
                argument=99,
                code="INVALID_COMMAND",
                reasons=[],
            ),
            entry(
                IDS[1],
                2,
                kind="command_refused",
                command=1,
                argument=99,
                code="INVALID_COMMAND",
                reasons=[""],
            ),  # a row journalled before the fix
            entry(IDS[1], 1, kind="move_failed", outcome="failed", reasons=["VFD"]),
        ],
        timestamp="2026-12-05T08:00:00.000Z",
    )
    counters = Counters(
        counters={m: {"moves_completed": 3, "seconds_in_motion": 2.5} for m in IDS},
        timestamp="2026-12-05T08:00:00.000Z",
    )
    text = render(history_table(page, counters))
    assert text.count(IDS[0]) == 1 + 2 and text.count(IDS[1]) == 2 + 2  # journal + counters
    assert "()" not in text
    assert "(VFD)" in text
    assert " 3 │" in text and "3.0" not in text


def test_counters_on_the_wire_keep_counts_as_integers():
    counters = Counters.model_validate_json(
        '{"type": "counters", "counters": {"m1": {"moves_completed": 3, '
        '"seconds_in_motion": 2.5}}, "timestamp": "2026-12-05T08:00:00.000Z"}'
    )
    assert type(counters.counters["m1"]["moves_completed"]) is int
    assert '"moves_completed":3,' in counters.model_dump_json()
