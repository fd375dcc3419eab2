"""Rich renderings for the CLI: the status table, the live ``watch`` screen, pick jobs."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import deque
from collections.abc import Iterable

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from carousel_gateway.fleet.lifecycle import stopping_conditions
from carousel_gateway.plc.status import StatusWord
from carousel_gateway.wire import (
    CommandResult,
    Counters,
    FleetStatus,
    History,
    JobLineState,
    JobState,
    JobView,
    MachineEvent,
    MachineInfo,
    MachineState,
    MachineStatus,
    MoveCompletedMessage,
    MoveFailedMessage,
    StatusBroadcast,
)

__all__ = [
    "describe_event",
    "history_table",
    "job_detail",
    "jobs_table",
    "status_table",
    "watch_screen",
]


def _states(reply: MachineStatus | FleetStatus) -> dict[str, MachineState]:
    if isinstance(reply, FleetStatus):
        return dict(reply.machines)
    return {
        reply.machine_id: MachineState(
            status=reply.status,
            position=reply.position,
            raw_status=reply.raw_status,
            connection_status=reply.connection_status,
            last_update=reply.last_update,
        )
    }


def _add_id_column(table: Table, machine_ids: Iterable[str]) -> None:
    """The machine column: ids are never cut (``machine_1`` and ``machine_2`` would both
    read "machine…" on a narrow terminal); the other columns give way instead."""
    width = max((len(machine_id) for machine_id in machine_ids), default=0)
    table.add_column("machine", no_wrap=True, min_width=max(width, len("machine")))


def status_table(
    reply: MachineStatus | FleetStatus | dict[str, MachineState], machines: list[MachineInfo]
) -> Table:
    states = reply if isinstance(reply, dict) else _states(reply)
    names = {m.id: m.name for m in machines}
    table = Table(title="Carousels")
    _add_id_column(table, states)
    for column in ("name", "link", "position", "motion", "mode", "interlocks", "raw"):
        table.add_column(column)
    for machine_id, state in states.items():
        link_style = "green" if state.connection_status == "connected" else "red"
        motion = mode = "-"
        interlocks = Text("-")
        if state.raw_status is not None:
            word = StatusWord(state.raw_status)
            labels = word.labels()
            motion = labels["RUN"] + (f" ({labels['SENTIDO_GIRO']})" if word.running else "")
            mode = labels["MODO_OPERACION"]
            blockers = stopping_conditions(word)
            interlocks = Text(", ".join(blockers) or "none", style="red" if blockers else "green")
        table.add_row(
            machine_id,
            names.get(machine_id, ""),
            Text(state.connection_status, style=link_style),
            "-" if state.position is None else str(state.position),
            motion,
            mode,
            interlocks,
            "-" if state.raw_status is None else str(state.raw_status),
        )
    return table


def history_table(page: History, counters: Counters) -> Group:
    """Journal entries (newest first) and the maintenance counters under them."""
    table = Table(title="Journal")
    table.add_column("time (UTC)")
    _add_id_column(table, (entry.machine_id for entry in page.entries))
    for column in ("kind", "who", "what", "outcome"):
        table.add_column(column)
    for entry in page.entries:
        extra = entry.model_extra or {}
        what = ""
        if entry.kind in ("command", "command_refused"):
            what = f"cmd {extra.get('command', '?')} arg {extra.get('argument', '-')}"
        elif "keys" in extra:
            what = ", ".join(extra["keys"])
        elif "position" in extra:
            what = f"at {extra['position']}"
        outcome = str(extra.get("outcome") or extra.get("code") or "")
        # Rows journalled before empty reasons were stored as [] hold [""]: no "()" for them.
        reasons = [str(reason) for reason in extra.get("reasons") or () if reason]
        if reasons:
            outcome += f" ({', '.join(reasons)})"
        style = "red" if entry.kind in ("move_failed", "fault_raised", "command_refused") else ""
        table.add_row(
            entry.timestamp.replace("T", " ").rstrip("Z"),
            entry.machine_id,
            Text(entry.kind, style=style),
            str(extra.get("client", "")),
            what,
            outcome,
        )
    totals = Table(title="Counters")
    _add_id_column(totals, counters.counters)
    totals.add_column("counter")
    totals.add_column("value", justify="right")
    for machine_id, values in sorted(counters.counters.items()):
        for name, value in sorted(values.items()):
            totals.add_row(machine_id, name, f"{value:g}")
    return Group(table, totals)


_JOB_STYLE = {
    JobState.QUEUED: "",
    JobState.ACTIVE: "green",
    JobState.PAUSED: "yellow",
    JobState.COMPLETED: "dim",
    JobState.CANCELLED: "red",
}
_LINE_STYLE = {
    JobLineState.PENDING: "",
    JobLineState.PRESENTED: "bold green",
    JobLineState.PICKED: "dim",
    JobLineState.SHORT: "yellow",
    JobLineState.CANCELLED: "red",
}
_DONE = (JobLineState.PICKED, JobLineState.SHORT, JobLineState.CANCELLED)


def _when(timestamp: str | None) -> str:
    """``2026-12-05 12:00:00`` from an ISO timestamp (seconds are enough on a terminal)."""
    return "-" if timestamp is None else timestamp.replace("T", " ")[:19]


def jobs_table(jobs: list[JobView]) -> Table:
    """Pick jobs, one row each: what a supervisor scans on an 80-column terminal."""
    table = Table(title="Pick jobs (times in UTC)")
    table.add_column("job", no_wrap=True, min_width=max([3, *(len(j.job_id) for j in jobs)]))
    table.add_column("station")
    table.add_column("state", overflow="fold")  # a pause's reason is never cut
    table.add_column("prio", justify="right")
    table.add_column("lines", justify="right")
    table.add_column("created", no_wrap=True)
    for job in jobs:
        done = sum(1 for line in job.lines if line.state in _DONE)
        state = Text(job.state.value, style=_JOB_STYLE[job.state])
        if job.paused_reason:
            state.append(f" ({job.paused_reason})")
        table.add_row(
            job.job_id,
            job.workstation_id,
            state,
            str(job.priority),
            f"{done}/{len(job.lines)}",
            _when(job.created_at)[5:16],  # MM-DD HH:MM (UTC)
        )
    return table


def job_detail(job: JobView) -> Group:
    """One job: its state, every line with what was picked, the route left, the stats."""
    head = Text()
    head.append(f"{job.job_id}", style="bold")
    head.append(f"  {job.workstation_id}  priority {job.priority}  ")
    head.append(job.state.value, style=_JOB_STYLE[job.state])
    if job.paused_reason:
        head.append(f"  paused: {job.paused_reason}", style="yellow")
    times = Text(
        f"created {_when(job.created_at)}  started {_when(job.started_at)}  "
        f"finished {_when(job.finished_at)}",
        style="dim",
    )
    lines = Table(title="Lines")
    lines.add_column("line", no_wrap=True)
    lines.add_column("carousel", no_wrap=True)
    lines.add_column("bucket", justify="right")
    lines.add_column("qty", justify="right")
    lines.add_column("SKU / order")
    lines.add_column("state")
    for line in job.lines:
        what = " / ".join(part for part in (line.sku, line.order_id) if part) or "-"
        state = Text(line.state.value, style=_LINE_STYLE[line.state])
        if line.quantity_picked is not None:
            state.append(f" {line.quantity_picked}")
        if line.reason:
            state.append(f" ({line.reason})")
        lines.add_row(
            line.line_id, line.machine_id, str(line.position), str(line.quantity), what, state
        )
    route = " → ".join(f"{stop.machine_id}:{stop.position}" for stop in job.route) or "-"
    stats = job.stats
    footer = Text(
        f"route left: {route}\n"
        f"moves {stats.moves}, buckets travelled {stats.buckets_travelled}, "
        f"operator waited {stats.operator_wait_s:.1f} s"
    )
    return Group(head, times, lines, footer)


def _describe_change(event: object) -> str | None:
    if not isinstance(event, StatusBroadcast):
        return None
    parts = []
    for machine_id, state in event.status.items():
        labels = state.status or {}
        parts.append(
            f"{machine_id}: {state.connection_status}, position {state.position}, "
            f"{labels.get('RUN', '-')}, raw {state.raw_status}"
        )
    return "; ".join(parts)


def describe_event(event: object) -> str | None:
    """One line for the event feed (None for plain status broadcasts)."""
    match event:
        case CommandResult(machine_id=m, data=data):
            verb = "skipped (already there)" if data.skipped else "sent"
            return f"{m}: command {data.command_sent} arg {data.argument} {verb}"
        case MoveCompletedMessage(machine_id=m, position=p, duration_s=d):
            return f"{m}: arrived at {p} after {d:.1f} s"
        case MoveFailedMessage(machine_id=m, target=t, reasons=r, position=p):
            return f"{m}: move to {t} failed ({', '.join(r)}) at {p}"
        case MachineEvent(machine_id=m, event=kind, keys=keys, reason=reason):
            detail = ", ".join(keys or ()) or reason or ""
            return f"{m}: {kind.value} {detail}".rstrip()
    return None


async def watch_screen(url: str, token: str | None) -> None:
    """Live table + event feed until Ctrl-C (or SIGTERM)."""
    # Ctrl-C or SIGTERM end the watch cleanly, even where SIGINT was inherited as ignored.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await _watch(url, token)


async def _watch(url: str, token: str | None) -> None:
    from carousel_gateway.client import CarouselClient

    states: dict[str, MachineState] = {}
    feed: deque[str] = deque(maxlen=15)
    console = Console()
    async with CarouselClient(url, token=token) as client:
        if not console.is_terminal:  # piped: the table once, then one line per event
            first = True
            async for event in client.events("all_events"):
                if isinstance(event, StatusBroadcast):
                    states.update(event.status)
                    if first:
                        console.print(status_table(states, client.machines))
                        first = False
                        continue
                line = describe_event(event) or _describe_change(event)
                if line:
                    console.print(f"{event.timestamp}  {line}", highlight=False, soft_wrap=True)
            return
        with Live(auto_refresh=False, console=console) as live:
            async for event in client.events("all_events"):
                if isinstance(event, StatusBroadcast):
                    states.update(event.status)
                line = describe_event(event)
                if line:
                    feed.appendleft(f"{event.timestamp[11:23]}  {line}")
                live.update(
                    Group(status_table(states, client.machines), Text("\n".join(feed))),
                    refresh=True,
                )
