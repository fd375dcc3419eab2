"""The CLI's pick job commands without a gateway: the tables on an 80-column terminal, the
demo job, and a job file that is wrong before anything is sent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from carousel_gateway.cli import app, demo_job
from carousel_gateway.cli_views import job_detail, jobs_table
from carousel_gateway.wire import (
    JobLineState,
    JobLineView,
    JobState,
    JobStats,
    JobView,
    MachineInfo,
    RouteStop,
)


def render(renderable: Any, width: int = 80) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def info(machine_id: str, positions: int = 30, base: int = 1) -> MachineInfo:
    return MachineInfo(
        id=machine_id,
        name="Carrusel",
        ip="127.0.0.1",
        port=3200,
        type="Simulator",
        positions=positions,
        position_base=base,
    )


def job(job_id: str = "ORD-2026-000123-NORTH", state: JobState = JobState.PAUSED) -> JobView:
    return JobView(
        job_id=job_id,
        workstation_id="station_1",
        priority=5,
        state=state,
        paused_reason="PARADA_EMERGENCIA" if state is JobState.PAUSED else None,
        lines=[
            JobLineView(
                line_id="1",
                machine_id="machine_1",
                position=14,
                quantity=3,
                sku="TORN-M6",
                order_id="PED-7",
                state=JobLineState.SHORT,
                quantity_picked=2,
                reason="only 2 left",
            ),
            JobLineView(
                line_id="2",
                machine_id="machine_2",
                position=3,
                quantity=1,
                state=JobLineState.PENDING,
            ),
        ],
        route=[RouteStop(machine_id="machine_2", position=3)],
        stats=JobStats(moves=3, buckets_travelled=17, operator_wait_s=4.25),
        created_at="2026-12-05T12:00:00.000Z",
        started_at="2026-12-05T12:00:01.000Z",
    )


def test_jobs_table_fits_80_columns_and_never_cuts_a_job_id():
    text = render(jobs_table([job(), job("J2", JobState.ACTIVE)]))
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "ORD-2026-000123-NORTH" in text
    assert "1/2" in text  # lines done / all
    assert "…" not in text  # a pause's reason folds onto more lines, it is never cut
    assert "(PARADA_EMERGENCIA)" in render(jobs_table([job()]), width=120)


def test_job_detail_shows_lines_route_and_stats():
    text = render(job_detail(job()))
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "short 2 (only 2 left)" in text
    assert "TORN-M6 / PED-7" in text
    assert "machine_2:3" in text
    assert "buckets travelled 17" in text
    assert "waited 4.2 s" in text or "waited 4.3 s" in text


def test_demo_job_is_random_within_each_carousel_and_repeatable_by_seed():
    machines = [info("machine_1", 30, 1), info("machine_2", 8, 0)]
    first = demo_job(machines, 40, "station_1", None, seed=7)
    assert first == demo_job(machines, 40, "station_1", None, seed=7)
    assert len(first.lines) == 40
    assert len({line.line_id for line in first.lines}) == 40
    for line in first.lines:
        carousel = next(m for m in machines if m.id == line.machine_id)
        assert carousel.position_base <= line.position < carousel.position_base + carousel.positions
        assert line.quantity >= 1
    assert {line.machine_id for line in first.lines} == {"machine_1", "machine_2"}
    only = demo_job(machines, 10, "station_1", ["machine_2"], seed=1)
    assert {line.machine_id for line in only.lines} == {"machine_2"}


def test_demo_jobs_without_a_seed_get_fresh_ids():
    machines = [info("machine_1")]
    assert demo_job(machines, 1, "s", None, None).job_id.startswith("demo-")


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("{not json", "Invalid JSON"),
        (
            json.dumps({"job_id": "J", "workstation_id": "s", "lines": [{"line_id": "1"}]}),
            "lines.0.machine_id",
        ),
        (
            json.dumps({"job_id": "J", "workstation_id": "s", "lines": [], "colour": 1}),
            "colour: unknown key",
        ),
    ],
)
def test_job_submit_refuses_a_bad_file_before_connecting(tmp_path, content, said):
    path = tmp_path / "job.json"
    path.write_text(content, encoding="utf-8")
    # An address nothing listens on: the command must stop before trying it.
    result = CliRunner().invoke(app, ["job", "submit", str(path), "--url", "ws://127.0.0.1:9"])
    assert result.exit_code == 2
    assert said in result.output


def test_job_list_refuses_an_unknown_state():
    result = CliRunner().invoke(app, ["job", "list", "--state", "sleeping"])
    assert result.exit_code == 2
    assert "queued, active, paused, completed, cancelled" in result.output
