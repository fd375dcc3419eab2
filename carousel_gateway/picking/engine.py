"""The job engine: every workstation of the gateway on the event loop (``JobService``).

It holds the pure :class:`~carousel_gateway.picking.board.JobBoard` and does its I/O: each
write is committed to the job store before the call returns; events go to listeners in
order; moves go through the one command path (``CommandPath``: ``api.commands.
CommandRunner`` in the gateway) with origin ``job:<job_id>``, one at a time per carousel,
never retried. A refused or failed move pauses the jobs it served with the reason. While a
workstation has an active, unpaused job its carousels are reserved for its jobs.

One lock orders every change: a change, its write and its events happen together, so
listeners see events in the order of the store's history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from carousel_gateway.config import GatewayConfig
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import (
    MoveCompleted,
    MoveFailed,
    Origin,
    OriginChannel,
    Reservation,
)
from carousel_gateway.fleet.machine import ExecutedCommand, Machine, MoveOutcomeUnknown
from carousel_gateway.picking.board import JobBoard
from carousel_gateway.picking.service import JobEventListener, Unsubscribe
from carousel_gateway.picking.store import JobStore, JobWriteFenced
from carousel_gateway.picking.workstation import Change, MoveOrder, Stop, Workstation
from carousel_gateway.plc.protocol import Command
from carousel_gateway.wire.clock import utc_timestamp
from carousel_gateway.wire.jobs import (
    JobEventKind,
    JobEventMessage,
    JobState,
    JobSubmission,
    JobView,
    WorkstationView,
)

__all__ = [
    "FAILOVER_MOVE_LOST",
    "FINISHED_JOBS_KEPT_S",
    "RESTART_REASON",
    "CommandPath",
    "JobEngine",
]

log = logging.getLogger(__name__)

#: Why jobs that were active when the gateway stopped come back paused.
RESTART_REASON = "gateway restarted"
#: Why a job whose MOVE the previous active gateway of the cell had sent (and whose outcome
#: nobody saw) is paused after a takeover: where the carousel stopped is not known to the job.
FAILOVER_MOVE_LOST = "failover_move_lost"
#: How long ended jobs stay in memory (listed, found by id, idempotent repeats); the store
#: keeps them for good. An id used by a job forgotten since is ``JOB_CONFLICT``.
FINISHED_JOBS_KEPT_S = 7 * 24 * 3600.0
#: Where job moves are refused from, for the rate limiter's refusal counts.
WHERE = "jobs"


class CommandPath(Protocol):
    """The one command path (``api.commands.CommandRunner`` satisfies it)."""

    async def run(
        self,
        machine: Machine,
        command: int,
        argument: int | None,
        origin: Origin,
        *,
        where: str,
    ) -> ExecutedCommand: ...

    async def outcome(
        self, machine: Machine, future: asyncio.Future[MoveCompleted | MoveFailed]
    ) -> MoveCompleted | MoveFailed: ...


class JobEngine:
    """Pick jobs for all workstations of one gateway (implements ``JobService``)."""

    def __init__(
        self,
        config: GatewayConfig,
        machines: Mapping[str, Machine],
        commands: CommandPath,
        store: JobStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.board = JobBoard(config.workstations, {m.id: m for m in config.machines})
        self.machines = dict(machines)
        self.commands = commands
        self.store = store
        self.clock = clock
        self._lock = asyncio.Lock()
        self._listeners: list[JobEventListener] = []
        self._moves: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._forgotten_at = 0.0
        #: Two gateways per cell: NOT_ACTIVE while this instance may not command (the
        #: coordinator's ``refusal``); None for a lone gateway.
        self.refusal: Callable[[], GatewayError | None] | None = None
        #: A standby plans no move (set by :meth:`open_standby`, cleared by :meth:`take_over`).
        self._standby = False
        #: A standby's read of the store under way (:meth:`follow_store`).
        self._following: asyncio.Task[None] | None = None
        #: The last history line of the store a standby has seen (None: none read yet).
        self._history_seen: int | None = None
        #: Set (and replaced) each time a standby's read of the store ends.
        self._follow_ended = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and take back its jobs: the active ones come back paused."""
        await self.store.open()
        now = self.clock()
        restored = 0
        self._forgotten_at = now
        for job in await self.store.load(finished_after=now - FINISHED_JOBS_KEPT_S):
            self.board.restore(job, RESTART_REASON, now)
            restored += not job.final
        async with self._lock:
            for station in self.board.stations.values():
                _, changes, dirty = station.take()  # nobody listens yet
                await self.store.write(dirty, changes)
                self._reserve(station)
        if restored:
            log.info("pick jobs: %d unfinished job(s) taken back (active ones paused)", restored)

    async def open_standby(self) -> None:
        """Two gateways per cell, as the standby: open the shared store and plan nothing
        (the active instance drives); :meth:`take_over` follows. From the start the jobs
        are shown read-only, as the active last committed them (:meth:`follow_store`)."""
        self._standby = True
        await self.store.open()
        await self._read_committed()

    def follow_store(self) -> None:
        """A standby, on each tick of the lease: show the jobs as the active last committed
        them. The store is read in a task (one at a time: a tick that finds one under way
        adds none) into a board that plans nothing, moves nothing and writes nothing; the
        history lines written since the last read go to the listeners as job events, and
        so do the stops newly presented."""
        if not self._standby or self._stopping:
            return
        if self._following is not None and not self._following.done():
            return
        self._following = asyncio.get_running_loop().create_task(self._follow(), name="jobs-follow")

    async def wait_followed(self) -> None:
        """Until a standby's next read of the store has ended (tests, tools)."""
        await self._follow_ended.wait()

    async def _follow(self) -> None:
        try:
            await self._read_committed()
        finally:
            ended, self._follow_ended = self._follow_ended, asyncio.Event()
            ended.set()

    async def _read_committed(self) -> None:
        now = self.clock()
        try:
            committed = await self.store.committed(now - FINISHED_JOBS_KEPT_S, self._history_seen)
        except Exception as exc:  # the next tick reads again
            log.warning("pick jobs: the standby could not read the job store: %s", exc)
            return
        async with self._lock:
            if not self._standby or self._stopping:
                return  # taken over meanwhile: the board is this instance's own now
            old, board = self.board, JobBoard(self.board.configs.values(), self.board.machines)
            for job in committed.jobs:
                board.mirror(job, now)
            for station in board.stations.values():
                shown = old.stations[station.id].presented
                for machine_id, stop in station.presented.items():
                    before = shown.get(machine_id)
                    if before is not None and before.position == stop.position:
                        stop.presented_at = before.presented_at
                for machine_id in station.machine_ids:
                    machine = self.machines.get(machine_id)
                    if machine is not None:  # the readings the standby mirrors
                        station.positions[machine_id] = machine.snapshot.position
            self.board = board
            first, self._history_seen = self._history_seen is None, committed.last
            if not first:
                self._publish_committed(old, committed.changes)

    def _publish_committed(self, old: JobBoard, changes: list[Change]) -> None:
        """A standby's job events: the history lines the active wrote, then each stop
        presented since the previous read (each with the job as it is now)."""
        events: list[tuple[JobEventKind, str, Stop | None]] = []
        for change in changes:
            with contextlib.suppress(ValueError):
                events.append((JobEventKind(change.what), change.job_id, None))
        for station in self.board.stations.values():
            before = old.stations[station.id].presented
            for machine_id, stop in station.presented.items():
                earlier = before.get(machine_id)
                lines = {(job.job_id, line.line_id) for job, line in stop.lines}
                if earlier is not None and earlier.position == stop.position:
                    lines -= {(job.job_id, line.line_id) for job, line in earlier.lines}
                for job_id in dict.fromkeys(job_id for job_id, _ in sorted(lines)):
                    events.append((JobEventKind.STOP_PRESENTED, job_id, stop))
        for kind, job_id, at in events:
            try:
                station, job = self.board.find(job_id)
            except GatewayError:
                continue  # of a workstation this instance does not have
            self._publish(
                JobEventMessage(
                    event=kind,
                    workstation_id=station.id,
                    job=station.job_view(job),
                    stop=at.view() if at is not None else None,
                    timestamp=utc_timestamp(self.clock()),
                )
            )

    def _publish(self, message: JobEventMessage) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(message)
            except Exception:
                log.exception("job event listener %r failed", listener)

    async def take_over(self, lost_moves: Mapping[str, str]) -> None:
        """This instance took the cell's lease: load the jobs the previous active left in
        the shared store. Active jobs go on (their carousels were at rest); a job whose MOVE
        was lost (``lost_moves``: job id -> machine id, from the intents marked ``lost``)
        pauses with :data:`FAILOVER_MOVE_LOST` until the operator resumes it. Nothing moves
        until :meth:`plan` (once the carousels have been read)."""
        now = self.clock()
        async with self._lock:
            self.board = JobBoard(self.board.configs.values(), self.board.machines)
            self._forgotten_at = now
            for job in await self.store.load(finished_after=now - FINISHED_JOBS_KEPT_S):
                self.board.restore(job, None, now)
            for job_id, machine_id in lost_moves.items():
                try:
                    station, job = self.board.find(job_id)
                except GatewayError:
                    continue  # an ended job, or one of a workstation no longer configured
                if job.state is not JobState.ACTIVE:
                    continue  # paused already, or a queued job's move ahead: nothing to stop
                station.pause(job_id, FAILOVER_MOVE_LOST, None, now)
                log.warning(
                    "pick jobs: the MOVE of %s for job %s was lost in the takeover: paused",
                    machine_id,
                    job_id,
                )
            for station in self.board.stations.values():
                _, changes, dirty = station.take()  # nobody listens to a takeover's restore
                await self.store.write(dirty, changes)
                self._reserve(station)
            self._standby = False
            self._history_seen = None  # a standby again later: no replay of its own lines

    async def plan(self) -> None:
        """Plan and start the moves every workstation asks for now (after a takeover)."""
        async with self._lock:
            for station in self.board.stations.values():
                await self._settle(station)

    async def stand_down(self) -> None:
        """Fenced: plan no more, release the reservations; the store's fence refuses any
        write still coming (the jobs are reloaded by the next :meth:`take_over`)."""
        self._standby = True
        for task in list(self._moves):
            task.cancel()
        for task in list(self._moves):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._lock:
            for station in self.board.stations.values():
                station.forget_moves()
                for machine_id in station.machine_ids:
                    machine = self.machines.get(machine_id)
                    if machine is not None:
                        machine.reserve(None)

    async def stop(self) -> None:
        """Stop planning moves; a move already handed to a machine runs to its end in the
        command path (which drains it), its job stays as the store has it."""
        if self._stopping:
            return
        self._stopping = True
        following, self._following = self._following, None
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        for task in list(self._moves):
            task.cancel()
        for task in list(self._moves):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for station in self.board.stations.values():
            station.forget_moves()
            for machine_id in station.machine_ids:
                machine = self.machines.get(machine_id)
                if machine is not None:
                    machine.reserve(None)
        async with self._lock:  # a write under way finishes first
            await self.store.close()

    # -- JobService -----------------------------------------------------------------------

    async def submit(self, submission: JobSubmission, by: str) -> tuple[JobView, bool]:
        self._check_active()
        async with self._lock:
            existing = self.board.existing(submission)
            if existing is not None:
                station = self.board.stations[existing.workstation_id]
                return station.job_view(existing), False
            now = self.clock()
            self._forget_finished(now)
            job = self.board.make(submission, by, now)  # INVALID_JOB before the disk
            try:
                used = await self.store.known(submission.job_id)
            except Exception as exc:  # a lost connection: not accepted, the client retries
                log.error("pick jobs: the job store could not read: %s", exc)
                raise GatewayError(
                    ErrorCode.INTERNAL_ERROR, f"the job store could not read: {exc}"
                ) from exc
            if used:
                raise GatewayError(
                    ErrorCode.JOB_CONFLICT,
                    f"job {submission.job_id!r} was used by a job that ended more than "
                    f"{FINISHED_JOBS_KEPT_S / 86400:g} days ago; choose a new job_id",
                )
            station = self.board.add(job, now)
            await self._settle(station)
            return station.job_view(job), True

    def jobs(
        self, workstation_id: str | None = None, state: JobState | None = None
    ) -> list[JobView]:
        return [
            self.board.stations[job.workstation_id].job_view(job)
            for job in self.board.jobs(workstation_id, state)
        ]

    def job(self, job_id: str) -> JobView:
        station, job = self.board.find(job_id)
        return station.job_view(job)

    async def confirm(
        self,
        job_id: str,
        line_id: str,
        quantity_picked: int,
        reason: str | None,
        by: str,
        *,
        confirmation_id: str | None = None,
    ) -> JobView:
        self._check_active()
        if self._standby and self.refusal is not None:
            # The lease is ours, the takeover has not loaded the jobs yet: NOT_ACTIVE (sent
            # again by the client), not JOB_NOT_FOUND from the standby's empty board.
            raise GatewayError(
                ErrorCode.NOT_ACTIVE,
                "this gateway is taking over its cell: the pick jobs are not loaded yet",
            )
        async with self._lock:
            station, _ = self.board.find(job_id)
            job = station.confirm(
                job_id, line_id, quantity_picked, reason, by, self.clock(), confirmation_id
            )
            # Also for a repeat: a change whose write failed is written now, before the
            # answer (an acknowledged confirmation is a committed one).
            await self._settle(station)
            return station.job_view(job)

    async def pause(self, job_id: str, by: str, reason: str | None = None) -> JobView:
        self._check_active()
        async with self._lock:
            station, _ = self.board.find(job_id)
            job = station.pause(job_id, reason or f"paused by {by}", by, self.clock())
            await self._settle(station)
            return station.job_view(job)

    async def resume(self, job_id: str, by: str) -> JobView:
        self._check_active()
        station, job = self.board.find(job_id)
        if job.state is JobState.PAUSED:
            await self._fresh_readings(station, job_id)
        async with self._lock:
            job = station.resume(job_id, by, self.clock())
            await self._settle(station)
            return station.job_view(job)

    async def cancel(self, job_id: str, by: str, reason: str | None = None) -> JobView:
        self._check_active()
        async with self._lock:
            station, _ = self.board.find(job_id)
            job = station.cancel(job_id, reason or f"cancelled by {by}", by, self.clock())
            await self._settle(station)
            return station.job_view(job)

    def workstations(self) -> list[WorkstationView]:
        return [station.view() for station in self.board.stations.values()]

    def workstation(self, workstation_id: str) -> WorkstationView:
        return self.board.station(workstation_id).view()

    def _check_active(self) -> None:
        """A standby of the cell changes no job: ``NOT_ACTIVE`` naming the active one."""
        if self.refusal is not None:
            refused = self.refusal()
            if refused is not None:
                raise refused

    def _forget_finished(self, now: float) -> None:
        """At most hourly: drop jobs ended more than FINISHED_JOBS_KEPT_S ago from memory."""
        if now - self._forgotten_at < 3600:
            return
        self._forgotten_at = now
        count = self.board.forget_finished(now - FINISHED_JOBS_KEPT_S)
        if count:
            log.info("pick jobs: %d job(s) ended over a week ago left memory (kept on disk)", count)

    def listen(self, listener: JobEventListener) -> Unsubscribe:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    # -- internals ------------------------------------------------------------------------

    async def _settle(self, station: Workstation) -> None:
        """After a change (under the lock): write it, publish its events, set the
        reservations, and start the moves the workstation asks for now."""
        happenings, changes, dirty = station.take()
        try:
            await self.store.write(dirty, changes)
        except Exception as exc:
            # Not acknowledged: the caller gets an error. What changed stays to be written
            # with the next change (the whole job is written each time).
            station.dirty.update(job.job_id for job in dirty)
            station.changes[:0] = changes
            log.error("pick jobs: the job store could not write: %s", exc)
            if isinstance(exc, JobWriteFenced):
                # The database says this instance no longer holds the lease, whatever our
                # role says yet: NOT_ACTIVE (naming the active when it is known).
                refused = self.refusal() if self.refusal is not None else None
                if refused is None:
                    refused = GatewayError(ErrorCode.NOT_ACTIVE, str(exc))
                else:
                    refused.message = f"{refused.message} ({exc})"
                raise refused from exc
            raise GatewayError(
                ErrorCode.INTERNAL_ERROR, f"the job store could not write: {exc}"
            ) from exc
        now = utc_timestamp(self.clock())
        for happening in happenings:
            _, job = self.board.find(happening.job_id)
            message = JobEventMessage(
                event=happening.kind,
                workstation_id=station.id,
                job=station.job_view(job),
                stop=happening.stop.view() if happening.stop is not None else None,
                timestamp=now,
            )
            for listener in tuple(self._listeners):
                try:
                    listener(message)
                except Exception:
                    log.exception("job event listener %r failed", listener)
        self._reserve(station)
        if self._stopping or self._standby:
            return
        for machine_id in station.machine_ids:
            if machine_id not in station.moving:
                machine = self.machines.get(machine_id)
                if machine is not None and machine.snapshot.position is not None:
                    station.positions[machine_id] = machine.snapshot.position
        for order in station.next_moves():
            task = asyncio.get_running_loop().create_task(
                self._move(station, order), name=f"job-move-{order.machine_id}"
            )
            self._moves.add(task)
            task.add_done_callback(self._moves.discard)

    def _reserve(self, station: Workstation) -> None:
        job_ids = station.reserving()
        reservation = Reservation(f"workstation {station.id}", job_ids) if job_ids else None
        for machine_id in station.machine_ids:
            machine = self.machines.get(machine_id)
            if machine is not None and machine.reservation != reservation:
                machine.reserve(reservation)

    async def _fresh_readings(self, station: Workstation, job_id: str) -> None:
        """Read each idle carousel of the workstation now (a STATUS through the command
        path), so that resuming plans from where the carousels really are."""
        origin = Origin(client=f"job:{job_id}", channel=OriginChannel.JOB)
        for machine_id in station.machine_ids:
            machine = self.machines.get(machine_id)
            if machine is None or machine.busy or machine_id in station.moving:
                continue
            try:
                await self.commands.run(machine, Command.STATUS, None, origin, where=WHERE)
            except GatewayError as exc:  # the move itself will say why it cannot go
                log.info("pick jobs: reading %s before resuming: %s", machine_id, exc.message)

    async def _move(self, station: Workstation, order: MoveOrder) -> None:
        """One move of a job: through the command path, then its outcome; never retried."""
        machine = self.machines[order.machine_id]
        if not _still_wanted(station, order):
            # Its job was paused or cancelled before the move was handed over: no move.
            async with self._lock:
                if station.moving.get(order.machine_id) is order:
                    del station.moving[order.machine_id]
                if not self._stopping:
                    with contextlib.suppress(GatewayError):  # logged
                        await self._settle(station)
            return
        origin = Origin(client=f"job:{order.job_id}", channel=OriginChannel.JOB)
        reason: str | None = None
        arrived_at: int | None = None
        moved = True
        try:
            while True:
                try:
                    executed = await self.commands.run(
                        machine, Command.MOVE, order.target, origin, where=WHERE
                    )
                except GatewayError as exc:
                    if exc.code is ErrorCode.MACHINE_RATE_LIMITED and exc.retry_after_s:
                        # Nothing was sent: the per-machine pace asks to wait, not to fail.
                        await asyncio.sleep(exc.retry_after_s)
                        continue
                    raise
                break
            if executed.outcome is None:
                moved = not executed.accepted.skipped
                arrived_at = order.target
            else:
                outcome = await self.commands.outcome(machine, executed.outcome)
                if isinstance(outcome, MoveCompleted):
                    arrived_at = outcome.position
                else:
                    reason = _reason(outcome.reasons, f"move to {order.target} failed")
        except MoveOutcomeUnknown as exc:
            # Sent, reply lost: the outcome may still come; wait for it before judging.
            if exc.outcome is not None:
                try:
                    outcome = await self.commands.outcome(machine, exc.outcome)
                except GatewayError as error:
                    reason = _reason(error.reasons, error.code.value)
                else:
                    if isinstance(outcome, MoveCompleted):
                        arrived_at = outcome.position
                    else:
                        reason = _reason(outcome.reasons, exc.code.value)
            else:
                reason = exc.code.value
        except GatewayError as exc:
            reason = _reason(exc.reasons, exc.code.value)
            log.info("pick jobs: move of %s to %d refused: %s", order.machine_id, order.target, exc)
        async with self._lock:
            if self._stopping:
                return
            now = self.clock()
            if arrived_at is not None:
                station.arrived(order.machine_id, arrived_at, now, moved=moved)
            else:
                station.move_failed(order.machine_id, reason or "move failed", now)
            with contextlib.suppress(GatewayError):  # logged; written with the next change
                await self._settle(station)


def _still_wanted(station: Workstation, order: MoveOrder) -> bool:
    """True while the job a move was ordered for still wants it (active, or next to start)."""
    if station.moving.get(order.machine_id) is not order:
        return False
    job = station.jobs.get(order.job_id)
    if job is None:
        return False
    return job.state is JobState.ACTIVE or (
        job.state is JobState.QUEUED and station.upcoming() is job
    )


def _reason(reasons: tuple[str, ...], fallback: str) -> str:
    """The pause reason: the status keys or failure reasons, else the error code."""
    return ", ".join(reasons) if reasons else fallback
