"""One workstation's picking, as a state machine without I/O (sans-I/O).

The asyncio engine and the virtual-clock benchmark drive the same object: they tell it what
happened (a job submitted, a carousel arrived, a move failed, a line confirmed, all with the
time) and ask it what to do (:meth:`Workstation.next_moves`: which carousels turn now, and
to which bucket). It never waits and never touches a socket; everything it decides is in
its return values, in :attr:`Workstation.happenings` (the job events, in order) and in
:attr:`Workstation.changes` (what the job store writes).

Rules (docs/picking.md):

- Up to ``max_active_jobs`` jobs hold the workstation at once (active or paused); the
  others wait in the queue, higher ``priority`` first, then in submission order. Priority
  chooses which job starts next; it never interrupts a started job or a presented stop.
- A stop is every open line of the active jobs in one (carousel, bucket): with several
  active jobs (batch picking) each bucket is visited once for all of them.
- A carousel whose presented stop has an unconfirmed line never moves. Every other carousel
  of the workstation turns to the first bucket of its optimal route at once (pick-ahead),
  so in a pod the operator picks from one carousel while the others travel.
- The operator is shown the presented stops in the order the carousels arrived.
- A move refused or failed pauses the jobs with open lines on that carousel, with the
  reason; nothing is retried. Paused lines leave their stop; resuming plans again from
  where the carousel is.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from carousel_gateway.config import MachineConfig, WorkstationConfig
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.picking.jobs import (
    Job,
    Line,
    check_confirmation,
    confirmation_repeat,
    job_view,
)
from carousel_gateway.picking.planner import distance, optimal_route
from carousel_gateway.wire.clock import utc_timestamp
from carousel_gateway.wire.jobs import (
    JobEventKind,
    JobLineState,
    JobState,
    JobView,
    RouteStop,
    StopLine,
    StopView,
    WorkstationView,
)

__all__ = [
    "Change",
    "Happening",
    "MoveOrder",
    "Planner",
    "Stop",
    "Workstation",
]

#: A route policy: ``(start, buckets, positions) -> visiting order``.
Planner = Callable[[int, list[int], int], list[int]]


@dataclass(slots=True)
class Stop:
    """A carousel at rest at a bucket, with the lines the operator picks there."""

    machine_id: str
    position: int
    presented_at: float
    lines: list[tuple[Job, Line]] = field(default_factory=list)

    @property
    def unconfirmed(self) -> bool:
        return any(line.state is JobLineState.PRESENTED for _, line in self.lines)

    def view(self) -> StopView:
        return StopView(
            machine_id=self.machine_id,
            position=self.position,
            lines=[
                StopLine(
                    job_id=job.job_id,
                    line_id=line.line_id,
                    order_id=line.order_id,
                    sku=line.sku,
                    description=line.description,
                    quantity=line.quantity,
                    state=line.state,
                )
                for job, line in self.lines
            ],
            presented_at=utc_timestamp(self.presented_at),
        )


@dataclass(frozen=True, slots=True)
class MoveOrder:
    """Turn ``machine_id`` to ``target`` now, as a move of job ``job_id``."""

    machine_id: str
    target: int
    job_id: str
    start: int | None
    distance: int  # buckets, the shorter way (0 when the position is unknown)


@dataclass(frozen=True, slots=True)
class Happening:
    """A job event to publish (the engine adds the views and the time, right after the
    change that made it: views are built only for events someone publishes)."""

    kind: JobEventKind
    job_id: str
    stop: Stop | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One line of a job's history for the store: a state change or a confirmation."""

    job_id: str
    at: float
    what: str  # the job event kind, e.g. "job_paused", "line_confirmed"
    by: str | None = None
    line_id: str | None = None
    quantity: int | None = None
    reason: str | None = None
    confirmation_id: str | None = None  # a confirmation's, as its client gave it


class Workstation:
    """One picking window: its jobs, its carousels' stops and moves, the operator's wait."""

    def __init__(
        self,
        config: WorkstationConfig,
        machines: Mapping[str, MachineConfig],
        *,
        planner: Planner = optimal_route,
    ) -> None:
        self.config = config
        #: The route policy: the exact optimum; the benchmark compares baselines with it.
        self.planner = planner
        self.id = config.id
        self.machine_ids = tuple(config.machines)
        self.sizes = {m: machines[m].positions for m in self.machine_ids}
        self.jobs: dict[str, Job] = {}
        #: Jobs holding the workstation (active or paused), in the order they started,
        #: and jobs waiting: what every decision looks at (ended jobs are only looked up).
        self._held: dict[str, Job] = {}
        self._queued: dict[str, Job] = {}
        #: The queue's order as a heap of (-priority, seq, job_id); entries of jobs no
        #: longer queued are dropped when they come to the top.
        self._queue_heap: list[tuple[int, int, str]] = []
        #: Presented stops with at least one unconfirmed line, by carousel.
        self.presented: dict[str, Stop] = {}
        #: Moves ordered and not yet arrived or failed, by carousel.
        self.moving: dict[str, MoveOrder] = {}
        #: Where each carousel stands, as last known (API numbering).
        self.positions: dict[str, int | None] = dict.fromkeys(self.machine_ids)
        #: Seconds the operator had nothing presented while a job waited for a carousel.
        self.idle_s = 0.0
        self.happenings: list[Happening] = []
        self.changes: list[Change] = []
        self.dirty: set[str] = set()
        #: Carousels this workstation turned and kept reserved since: known to stand where
        #: they arrived (a job starting there is presented at once).
        self._parked: set[str] = set()
        #: Carousels whose move ahead for the next job failed: no second try before a job
        #: starts or resumes (a failed move is never retried by itself).
        self._no_lookahead: set[str] = set()
        self._idle_since: float | None = None
        self._idle_jobs: tuple[str, ...] = ()
        self._seq = itertools.count(1)

    # -- reading ------------------------------------------------------------------------

    def holding(self) -> list[Job]:
        """Jobs that hold the workstation (active or paused), in the order they started."""
        return list(self._held.values())

    def active(self) -> list[Job]:
        return [job for job in self._held.values() if job.state is JobState.ACTIVE]

    def queue(self) -> list[Job]:
        return sorted(self._queued.values(), key=_queue_order)

    def reserving(self) -> tuple[str, ...]:
        """The jobs whose moves the carousels admit (empty: release the carousels): the
        active ones, and the next to start, which idle carousels already turn for."""
        active = [job.job_id for job in self.active()]
        upcoming = self.upcoming()
        if active and upcoming is not None:
            active.append(upcoming.job_id)
        return tuple(active)

    def upcoming(self) -> Job | None:
        """The queued job that starts next."""
        heap = self._queue_heap
        while heap and heap[0][2] not in self._queued:
            heapq.heappop(heap)
        return self._queued[heap[0][2]] if heap else None

    def paused_reason(self) -> str | None:
        if self.active():
            return None
        for job in self.holding():
            if job.paused_reason:
                return job.paused_reason
        return None

    def ordered_stops(self) -> list[Stop]:
        """Presented stops in the order to pick them: the carousel that arrived first."""
        return sorted(self.presented.values(), key=lambda stop: stop.presented_at)

    def route(self, machine_id: str) -> list[int]:
        """The buckets ``machine_id`` still visits for the active jobs, in order."""
        buckets = [
            line.position
            for job in self.active()
            for line in job.lines
            if line.machine_id == machine_id and line.state is JobLineState.PENDING
        ]
        if not buckets:
            return []
        start = self.positions.get(machine_id)
        size = self.sizes[machine_id]
        if start is None:
            start = buckets[0]
        # Positions are read modulo the size; the route gives them back as given.
        return self.planner(start, buckets, size)

    def job_route(self, job: Job) -> list[RouteStop]:
        """A job's remaining stops: its part of the workstation's route while it is active,
        else its own shortest route from where the carousels stand."""
        stops: list[RouteStop] = []
        if job.final:
            return stops
        for machine_id in self.machine_ids:
            mine = {
                line.position
                for line in job.lines
                if line.machine_id == machine_id and line.state is JobLineState.PENDING
            }
            if not mine:
                continue
            if job.state is JobState.ACTIVE:
                order = [b for b in self.route(machine_id) if b in mine]
            else:
                start = self.positions.get(machine_id)
                order = optimal_route(
                    start if start is not None else min(mine), mine, self.sizes[machine_id]
                )
            stops.extend(RouteStop(machine_id=machine_id, position=b) for b in order)
        return stops

    def job_view(self, job: Job) -> JobView:
        return job_view(job, self.job_route(job))

    def view(self) -> WorkstationView:
        stops = self.ordered_stops()
        return WorkstationView(
            id=self.id,
            name=self.config.name,
            machines=list(self.machine_ids),
            max_active_jobs=self.config.max_active_jobs,
            current=stops[0].view() if stops else None,
            presented=[stop.view() for stop in stops],
            active_jobs=[job.job_id for job in self.holding()],
            queue=[job.job_id for job in self.queue()],
            route={m: self.route(m) for m in self.machine_ids},
            paused_reason=self.paused_reason(),
        )

    # -- jobs -----------------------------------------------------------------------------

    def next_seq(self) -> int:
        return next(self._seq)

    def restore(self, job: Job, reason: str | None, at: float) -> None:
        """Take back a job from the store after a restart: an active one comes back paused
        with ``reason`` (nothing moves by itself), its presented lines pending again. With
        ``reason`` None (a takeover by the cell's other gateway) an active job stays active:
        its carousels were at rest, the route goes on from where they are."""
        self.jobs[job.job_id] = job
        if job.state is JobState.QUEUED:
            self._enqueue(job)
        elif not job.final:
            self._held[job.job_id] = job
        self._seq = itertools.count(max(job.seq + 1, next(self._seq)))
        if job.state is JobState.ACTIVE and reason is not None:
            job.state = JobState.PAUSED
            job.paused_reason = reason
            self._record(job, at, JobEventKind.JOB_PAUSED, reason=reason)
        for line in job.lines:
            if line.state is JobLineState.PRESENTED:
                line.state = JobLineState.PENDING
                self.dirty.add(job.job_id)

    def mirror(self, job: Job, at: float) -> None:
        """A standby's copy of a stored job, exactly as the active committed it: nothing
        changes, nothing is recorded, nothing is planned. Its presented lines make the
        stops shown (presented at ``at``, unless the caller knows better)."""
        self.jobs[job.job_id] = job
        if job.state is JobState.QUEUED:
            self._enqueue(job)
        elif not job.final:
            self._held[job.job_id] = job
        for line in job.lines:
            if line.state is JobLineState.PRESENTED:
                stop = self.presented.get(line.machine_id)
                if stop is None:
                    stop = self.presented[line.machine_id] = Stop(
                        line.machine_id, line.position, at
                    )
                stop.lines.append((job, line))

    def add(self, job: Job, at: float) -> None:
        """Queue a validated job; it starts at once when the workstation has room."""
        self.jobs[job.job_id] = job
        self._enqueue(job)
        self._record(job, at, JobEventKind.JOB_QUEUED, by=job.submitted_by)
        self._emit(JobEventKind.JOB_QUEUED, job)
        self._fill(at)
        self._account(at)

    def confirm(
        self,
        job_id: str,
        line_id: str,
        quantity_picked: int,
        reason: str | None,
        by: str,
        at: float,
        confirmation_id: str | None = None,
    ) -> Job:
        """Confirm a presented line (``INVALID_COMMAND`` when the rules say no). A retry of
        a confirmation already applied changes nothing and returns the job as it is
        (:func:`~carousel_gateway.picking.jobs.confirmation_repeat`)."""
        job = self._job(job_id)
        if confirmation_repeat(job, line_id, quantity_picked, reason, confirmation_id):
            return job
        line = check_confirmation(job, line_id, quantity_picked, reason)
        stop = self.presented.get(line.machine_id)
        line.quantity_picked = quantity_picked
        line.state = JobLineState.PICKED if quantity_picked == line.quantity else JobLineState.SHORT
        line.reason = reason if line.state is JobLineState.SHORT else None
        line.confirmed_by = by
        line.confirmed_at = at
        line.confirmation_id = confirmation_id
        self._record(
            job,
            at,
            JobEventKind.LINE_CONFIRMED,
            by=by,
            line_id=line_id,
            quantity=quantity_picked,
            reason=line.reason,
            confirmation_id=confirmation_id,
        )
        self._emit(JobEventKind.LINE_CONFIRMED, job, stop)
        self._prune_stops()
        self._complete_if_done(job, at)
        self._fill(at)
        self._account(at)
        return job

    def pause(self, job_id: str, reason: str, by: str | None, at: float) -> Job:
        """Pause an active job (a paused one stays as it is)."""
        job = self._job(job_id)
        if job.state is JobState.PAUSED:
            return job
        if job.state is not JobState.ACTIVE:
            raise GatewayError(
                ErrorCode.INVALID_COMMAND,
                f"job {job_id!r} is {job.state.value}: only an active job is paused",
            )
        self._pause(job, reason, by, at)
        self._account(at)
        return job

    def resume(self, job_id: str, by: str | None, at: float) -> Job:
        """Resume a paused job (an active one stays as it is); the caller plans again."""
        job = self._job(job_id)
        if job.state is JobState.ACTIVE:
            return job
        if job.state is not JobState.PAUSED:
            raise GatewayError(
                ErrorCode.INVALID_COMMAND,
                f"job {job_id!r} is {job.state.value}: only a paused job is resumed",
            )
        job.state = JobState.ACTIVE
        job.paused_reason = None
        self._no_lookahead.clear()
        self._record(job, at, JobEventKind.JOB_RESUMED, by=by)
        self._emit(JobEventKind.JOB_RESUMED, job)
        self._attach_to_presented(job)
        self._account(at)
        return job

    def cancel(self, job_id: str, reason: str | None, by: str | None, at: float) -> Job:
        """Cancel a job that has not ended: its open lines are cancelled."""
        job = self._job(job_id)
        if job.final:
            raise GatewayError(
                ErrorCode.INVALID_COMMAND,
                f"job {job_id!r} is already {job.state.value}",
            )
        for line in job.lines:
            if line.open:
                line.state = JobLineState.CANCELLED
                line.reason = reason
        job.state = JobState.CANCELLED
        job.paused_reason = None
        job.finished_at = at
        self._held.pop(job.job_id, None)
        self._queued.pop(job.job_id, None)
        self._record(job, at, JobEventKind.JOB_CANCELLED, by=by, reason=reason)
        self._emit(JobEventKind.JOB_CANCELLED, job)
        self._prune_stops()
        self._fill(at)
        self._account(at)
        return job

    # -- carousels ------------------------------------------------------------------------

    def next_moves(self) -> list[MoveOrder]:
        """The carousels to turn now and where (each is then counted as moving until
        :meth:`arrived` or :meth:`move_failed`). A carousel moving, or holding a stop with
        an unconfirmed line, is left alone."""
        orders: list[MoveOrder] = []
        upcoming = self.upcoming() if self.active() else None
        for machine_id in self.machine_ids:
            if machine_id in self.moving or machine_id in self.presented:
                continue
            route = self.route(machine_id)
            if route:
                job_id = self._first_job_at(machine_id, route[0]).job_id
            elif upcoming is not None and machine_id not in self._no_lookahead:
                # Nothing left here for the active jobs: turn to the next job's first
                # bucket now, so it is at the window when that job starts.
                route = self._route_of(upcoming, machine_id)
                job_id = upcoming.job_id
                if route and route[0] == self.positions.get(machine_id):
                    continue  # already there, waiting for it
            if not route:
                continue
            target = route[0]
            start = self.positions.get(machine_id)
            order = MoveOrder(
                machine_id=machine_id,
                target=target,
                job_id=job_id,
                start=start,
                distance=0 if start is None else distance(start, target, self.sizes[machine_id]),
            )
            self.moving[machine_id] = order
            orders.append(order)
        return orders

    def arrived(self, machine_id: str, position: int, at: float, *, moved: bool = True) -> None:
        """A carousel is at rest at ``position``: present its stop (``moved``: a MOVE was
        sent for it, counted in the stats of the jobs it serves)."""
        order = self.moving.pop(machine_id, None)
        self.positions[machine_id] = position
        self._parked.add(machine_id)
        lines = [
            (job, line)
            for job in self.active()
            for line in job.lines
            if line.machine_id == machine_id
            and line.position == position
            and line.state is JobLineState.PENDING
        ]
        served = {job.job_id: job for job, _ in lines}
        if moved and order is not None:
            counted = served or (
                {order.job_id: self.jobs[order.job_id]} if order.job_id in self.jobs else {}
            )
            for job in counted.values():
                job.moves += 1
                job.buckets_travelled += order.distance
                self.dirty.add(job.job_id)
        if not lines:
            return
        stop = Stop(machine_id, position, at)
        self.presented[machine_id] = stop
        self._present(stop, lines, at)
        self._account(at)

    def move_failed(self, machine_id: str, reason: str, at: float) -> list[Job]:
        """A move was refused or failed: pause every active job with open lines on that
        carousel, with ``reason``. Returns the jobs paused."""
        order = self.moving.pop(machine_id, None)
        if order is not None and order.job_id in self._queued:
            self._no_lookahead.add(machine_id)  # a move ahead: its job has not started
        paused = [
            job
            for job in self.active()
            if any(line.open and line.machine_id == machine_id for line in job.lines)
        ]
        for job in paused:
            self._pause(job, reason, None, at)
        self._account(at)
        return paused

    def forget_moves(self) -> None:
        """Drop moves in flight (the engine stops; their outcome no longer matters here)."""
        self.moving.clear()

    # -- internals ------------------------------------------------------------------------

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise GatewayError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id!r}")
        return job

    def _first_job_at(self, machine_id: str, position: int) -> Job:
        for job in self.active():
            for line in job.lines:
                if (
                    line.machine_id == machine_id
                    and line.position == position
                    and line.state is JobLineState.PENDING
                ):
                    return job
        raise AssertionError("a route bucket with no line")  # pragma: no cover

    def _fill(self, at: float) -> None:
        """Start queued jobs while the workstation has room (priority, then order)."""
        while len(self._held) < self.config.max_active_jobs:
            job = self.upcoming()
            if job is None:
                return
            heapq.heappop(self._queue_heap)
            del self._queued[job.job_id]
            self._held[job.job_id] = job
            job.state = JobState.ACTIVE
            job.started_at = at
            self._no_lookahead.clear()
            self._record(job, at, JobEventKind.JOB_STARTED)
            self._emit(JobEventKind.JOB_STARTED, job)
            self._attach_to_presented(job)
            self._present_where_parked(job, at)

    def _enqueue(self, job: Job) -> None:
        self._queued[job.job_id] = job
        heapq.heappush(self._queue_heap, (-job.priority, job.seq, job.job_id))

    def _present_where_parked(self, job: Job, at: float) -> None:
        """A job starting where a carousel already waits for it (turned ahead while the
        previous job finished) is presented there at once."""
        for machine_id in sorted(self._parked):
            if machine_id in self.moving or machine_id in self.presented:
                continue
            position = self.positions.get(machine_id)
            if position is None:
                continue
            lines = [
                (job, line)
                for line in job.lines
                if line.machine_id == machine_id
                and line.position == position
                and line.state is JobLineState.PENDING
            ]
            if lines:
                stop = Stop(machine_id, position, at)
                self.presented[machine_id] = stop
                self._present(stop, lines, at)

    def _route_of(self, job: Job, machine_id: str) -> list[int]:
        buckets = [
            line.position
            for line in job.lines
            if line.machine_id == machine_id and line.state is JobLineState.PENDING
        ]
        if not buckets:
            return []
        start = self.positions.get(machine_id)
        return self.planner(buckets[0] if start is None else start, buckets, self.sizes[machine_id])

    def _attach_to_presented(self, job: Job) -> None:
        """A job that starts (or resumes) while a carousel already shows one of its
        buckets is picked there at once: no second visit."""
        for stop in self.ordered_stops():
            lines = [
                (job, line)
                for line in job.lines
                if line.machine_id == stop.machine_id
                and line.position == stop.position
                and line.state is JobLineState.PENDING
            ]
            if lines:
                self._present(stop, lines, stop.presented_at)

    def _present(self, stop: Stop, lines: list[tuple[Job, Line]], at: float) -> None:
        for job, line in lines:
            line.state = JobLineState.PRESENTED
            self.dirty.add(job.job_id)
        stop.lines.extend(lines)
        for job_id in dict.fromkeys(job.job_id for job, _ in lines):
            self.happenings.append(Happening(JobEventKind.STOP_PRESENTED, job_id, stop))

    def _pause(self, job: Job, reason: str, by: str | None, at: float) -> None:
        job.state = JobState.PAUSED
        job.paused_reason = reason
        for line in job.lines:
            if line.state is JobLineState.PRESENTED:
                line.state = JobLineState.PENDING
        for stop in self.presented.values():
            stop.lines = [(j, line) for j, line in stop.lines if j is not job]
        self._record(job, at, JobEventKind.JOB_PAUSED, by=by, reason=reason)
        self._emit(JobEventKind.JOB_PAUSED, job)
        self._prune_stops()

    def _complete_if_done(self, job: Job, at: float) -> None:
        if job.state is JobState.ACTIVE and not job.open_lines():
            job.state = JobState.COMPLETED
            job.finished_at = at
            self._held.pop(job.job_id, None)
            self._record(job, at, JobEventKind.JOB_COMPLETED)
            self._emit(JobEventKind.JOB_COMPLETED, job)

    def _prune_stops(self) -> None:
        for machine_id, stop in list(self.presented.items()):
            if not stop.unconfirmed:
                del self.presented[machine_id]

    def _account(self, at: float) -> None:
        """Operator wait: nothing presented while an active job still has lines to pick."""
        active = self.active()
        if not active:
            self._parked.clear()  # released: anyone may move the carousels now
        waiting = tuple(job.job_id for job in active if job.open_lines())
        idle = not self.presented and bool(waiting)
        if self._idle_since is not None and not idle:
            spent = max(at - self._idle_since, 0.0)
            self.idle_s += spent
            for job_id in self._idle_jobs:
                job = self.jobs[job_id]
                job.operator_wait_s += spent
                self.dirty.add(job_id)
            self._idle_since = None
        if self._idle_since is None and idle:
            self._idle_since = at
            self._idle_jobs = waiting

    def _emit(self, kind: JobEventKind, job: Job, stop: Stop | None = None) -> None:
        self.happenings.append(Happening(kind, job.job_id, stop))

    def _record(
        self,
        job: Job,
        at: float,
        kind: JobEventKind,
        *,
        by: str | None = None,
        line_id: str | None = None,
        quantity: int | None = None,
        reason: str | None = None,
        confirmation_id: str | None = None,
    ) -> None:
        self.dirty.add(job.job_id)
        self.changes.append(
            Change(job.job_id, at, kind.value, by, line_id, quantity, reason, confirmation_id)
        )

    def forget_finished(self, before: float) -> list[str]:
        """Drop jobs that ended before ``before`` from memory (the store keeps them)."""
        gone = [
            job_id
            for job_id, job in self.jobs.items()
            if job.final and job.finished_at is not None and job.finished_at < before
        ]
        for job_id in gone:
            del self.jobs[job_id]
        return gone

    def take(self) -> tuple[list[Happening], list[Change], list[Job]]:
        """What happened since the last call: events, history lines, jobs to write."""
        happenings, self.happenings = self.happenings, []
        changes, self.changes = self.changes, []
        dirty = [self.jobs[job_id] for job_id in sorted(self.dirty)]
        self.dirty = set()
        return happenings, changes, dirty


def _queue_order(job: Job) -> tuple[int, int]:
    """Higher priority first, then submission order."""
    return (-job.priority, job.seq)
