"""Goods-to-person picking throughput: route policies and pods, on a virtual clock.

Runs the gateway's own pure picking code (``picking.workstation.Workstation``: stops,
pick-ahead, priority, the planners) against the simulator's carousel model
(``sim.carousel.CarouselModel``: the shorter way, ``--bucket-s`` per bucket) on a virtual
clock, so thousands of jobs take seconds. Seeded: the same arguments print the same table.

- Carousels of ``--positions`` buckets; each move costs the model's travel time plus
  ``--start-stop-s`` (acceleration, braking, settling at the window); a move to the bucket
  already at the window costs nothing (the gateway skips it).
- Jobs of ``--lines-min``..``--lines-max`` lines, buckets uniform over the pod's carousels;
  all jobs are queued at the start (the operator is never short of work).
- One operator: takes the first presented stop (the carousel that arrived first), spends a
  pick time per line drawn from a gamma distribution with mean ``--pick-s`` (CV
  ``--pick-cv``), confirms, and goes to the next ready stop, or waits for one.

Prints, per configuration: picks per hour, the share of time the operator waited for a
carousel, buckets travelled per pick, and picks per hour as a share of the operator-bound
limit (3600 / mean pick time: an operator who never waits).

    .venv/bin/python benchmarks/picking.py
    .venv/bin/python benchmarks/picking.py --jobs 5000 --seed 7
    .venv/bin/python benchmarks/picking.py --e2e 40   # also one job through a real gateway

``--e2e N`` runs one job of N lines through a real gateway in this process (embedded
simulators over loopback at ``--e2e-bucket-s`` per bucket, the job store on disk) with an
operator who confirms each stop the moment it is presented, and prints what the gateway
adds per stop beyond the carousel's own travel: from the confirmation's return to the MOVE
reaching the simulator, and from the carousel's arrival to ``stop_presented``.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine_line, percentile
from carousel_gateway.app import Gateway
from carousel_gateway.config import MachineConfig, WorkstationConfig, parse_config
from carousel_gateway.picking.jobs import Job, Line
from carousel_gateway.picking.planner import (
    distance,
    fifo_route,
    nearest_next_route,
    optimal_route,
)
from carousel_gateway.picking.workstation import Planner, Workstation
from carousel_gateway.sim.carousel import CarouselModel
from carousel_gateway.wire.jobs import JobEventKind, JobEventMessage, JobLineState, JobSubmission

POLICIES: dict[str, Planner] = {
    "FIFO (lines as submitted)": lambda start, buckets, n: fifo_route(buckets, n),
    "nearest-next": nearest_next_route,
    "optimal route": optimal_route,
}


@dataclass(frozen=True, slots=True)
class Setup:
    label: str
    policy: str
    carousels: int
    max_active_jobs: int = 1


@dataclass(frozen=True, slots=True)
class Result:
    setup: Setup
    picks: int
    seconds: float
    idle_s: float
    buckets: int
    moves: int
    mean_pick_s: float

    @property
    def per_hour(self) -> float:
        return self.picks / self.seconds * 3600

    @property
    def limit(self) -> float:
        return 3600 / self.mean_pick_s


def make_jobs(
    rng: random.Random, count: int, carousels: int, positions: int, low: int, high: int
) -> list[list[tuple[str, int]]]:
    return [
        [
            (f"m{rng.randrange(carousels) + 1}", rng.randrange(positions) + 1)
            for _ in range(rng.randint(low, high))
        ]
        for _ in range(count)
    ]


def run(setup: Setup, args: argparse.Namespace) -> Result:
    rng = random.Random(args.seed)  # the same jobs and pick times for every policy
    jobs = make_jobs(
        rng, args.jobs, setup.carousels, args.positions, args.lines_min, args.lines_max
    )
    shape = args.pick_cv**-2
    picks_rng = random.Random(args.seed + 1)
    now = 0.0
    machine_ids = [f"m{i + 1}" for i in range(setup.carousels)]
    configs = {
        m: MachineConfig(id=m, name=m, port=3200, positions=args.positions) for m in machine_ids
    }
    station = Workstation(
        WorkstationConfig(
            id="s", name="s", machines=tuple(machine_ids), max_active_jobs=setup.max_active_jobs
        ),
        configs,
        planner=POLICIES[setup.policy],
    )
    models = {
        m: CarouselModel(
            args.positions,
            args.bucket_s,
            clock=lambda: now,
            start_index=rng.randrange(args.positions),
        )
        for m in machine_ids
    }
    for m, model in models.items():
        station.positions[m] = model.position_index + 1
    for number, lines in enumerate(jobs):
        job = Job(
            job_id=f"J{number}",
            workstation_id="s",
            priority=0,
            lines=[
                Line(line_id=f"L{i}", machine_id=m, position=p, quantity=1)
                for i, (m, p) in enumerate(lines)
            ],
            content="",
            seq=station.next_seq(),
            created_at=0.0,
        )
        station.add(job, 0.0)
    # The event queue: (time, order, kind, machine).
    queue: list[tuple[float, int, str, str]] = []
    counter = 0
    buckets = moves = picks = 0
    pick_total = 0.0
    operator_busy = False

    def dispatch() -> None:
        nonlocal counter, buckets, moves
        for order in station.next_moves():
            model = models[order.machine_id]
            index = order.target - 1
            if model.position_index == index:
                arrival = now
            else:
                model.move(index)
                arrival_time = model.arrival_time()
                assert arrival_time is not None
                arrival = arrival_time + args.start_stop_s
                buckets += order.distance
                moves += 1
            counter += 1
            heapq.heappush(queue, (arrival, counter, "arrive", order.machine_id))

    def operator_next() -> None:
        """The operator takes the first ready stop, if any."""
        nonlocal operator_busy, counter, pick_total
        stops = station.ordered_stops()
        if operator_busy or not stops:
            return
        stop = stops[0]
        lines = sum(1 for _, line in stop.lines if line.state is JobLineState.PRESENTED)
        spent = sum(picks_rng.gammavariate(shape, args.pick_s / shape) for _ in range(lines))
        pick_total += spent
        operator_busy = True
        counter += 1
        heapq.heappush(queue, (now + spent, counter, "picked", stop.machine_id))

    dispatch()
    while queue:
        now, _, kind, machine_id = heapq.heappop(queue)
        if kind == "arrive":
            position = models[machine_id].position_index + 1
            station.arrived(machine_id, position, now)
        else:
            operator_busy = False
            stop = station.presented[machine_id]
            for job, line in list(stop.lines):
                if line.state is JobLineState.PRESENTED:
                    station.confirm(job.job_id, line.line_id, line.quantity, None, "op", now)
                    picks += 1
        station.take()  # events and history: not needed here
        dispatch()
        operator_next()
    assert all(job.final for job in station.jobs.values())
    return Result(setup, picks, now, station.idle_s, buckets, moves, pick_total / picks)


async def end_to_end(lines: int, bucket_s: float, seed: int) -> None:
    """One job through a real gateway; per stop, what the gateway adds to the travel."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        config = parse_config(
            {
                "websocket": {"host": "127.0.0.1", "port": 0},
                "http": {"host": "127.0.0.1", "port": 0},
                "journal": {"path": f"{folder}/gateway.db"},
                "limits": {"commands_per_machine_per_second": 1000.0, "command_burst": 1000},
                "machines": [
                    {
                        "id": "machine_1",
                        "name": "Carrusel",
                        "kind": "simulator",
                        "positions": 30,
                        "simulator": {"seconds_per_position": bucket_s},
                    }
                ],
                "workstations": [{"id": "s", "name": "Puesto", "machines": ["machine_1"]}],
            }
        )
        gateway = Gateway(config)
        await gateway.start()
        try:
            await _run_end_to_end(gateway, lines, bucket_s, rng)
        finally:
            await gateway.stop()


async def _run_end_to_end(
    gateway: Gateway, lines: int, bucket_s: float, rng: random.Random
) -> None:
    jobs = gateway.jobs
    assert jobs is not None and gateway.fleet is not None
    model = gateway.simulators["machine_1"].model
    machine = gateway.fleet.get("machine_1")
    read = asyncio.Event()
    unsubscribe = gateway.fleet.bus.subscribe(lambda _event: read.set())
    while machine.snapshot.position is None:  # the first reading
        read.clear()
        await read.wait()
    unsubscribe()
    presented: asyncio.Queue[tuple[float, JobEventMessage]] = asyncio.Queue()
    done = asyncio.Event()

    def on_event(message: JobEventMessage) -> None:
        if message.event is JobEventKind.STOP_PRESENTED:
            presented.put_nowait((time.monotonic(), message))
        elif message.event is JobEventKind.JOB_COMPLETED:
            done.set()

    jobs.listen(on_event)
    submission = JobSubmission.model_validate(
        {
            "job_id": "E2E",
            "workstation_id": "s",
            "lines": [
                {
                    "line_id": f"L{i}",
                    "machine_id": "machine_1",
                    "position": rng.randint(1, 30),
                    "quantity": 1,
                }
                for i in range(lines)
            ],
        }
    )
    to_move: list[float] = []
    to_present: list[float] = []
    confirms: list[float] = []
    position = machine.snapshot.position
    released = time.monotonic()
    await jobs.submit(submission, "bench")
    while not done.is_set():
        waiter = asyncio.ensure_future(presented.get())
        finished = asyncio.ensure_future(done.wait())
        await asyncio.wait({waiter, finished}, return_when=asyncio.FIRST_COMPLETED)
        finished.cancel()
        if not waiter.done():
            waiter.cancel()
            break
        seen_at, message = waiter.result()
        assert message.stop is not None
        target = message.stop.position
        travel = distance(position, target, 30) * bucket_s
        if target != position:
            arrived_at = model.position_since
            to_move.append(arrived_at - travel - released)
            to_present.append(seen_at - arrived_at)
        position = target
        for line in message.stop.lines:
            started = time.monotonic()
            await jobs.confirm(line.job_id, line.line_id, line.quantity, None, "bench")
            confirms.append(time.monotonic() - started)
        released = time.monotonic()
    print()
    print(f"end to end: one job of {lines} lines, {len(to_move)} moves, {bucket_s:g} s/bucket")
    for label, values in (
        ("confirm() round trip (SQLite commit, fsync)", confirms),
        ("confirmation → MOVE at the simulator (plan, interlock readings, MOVE)", to_move),
        ("arrival → stop_presented (polling, settling readings)", to_present),
    ):
        print(
            f"  {label}: median {statistics.median(values) * 1000:.1f} ms, "
            f"p90 {percentile(values, 90) * 1000:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--positions", type=int, default=30)
    parser.add_argument("--bucket-s", type=float, default=1.0)
    parser.add_argument("--start-stop-s", type=float, default=2.0)
    parser.add_argument("--pick-s", type=float, default=6.0)
    parser.add_argument("--pick-cv", type=float, default=0.3)
    parser.add_argument("--lines-min", type=int, default=3)
    parser.add_argument("--lines-max", type=int, default=12)
    parser.add_argument("--e2e", type=int, default=0, metavar="LINES")
    parser.add_argument("--e2e-bucket-s", type=float, default=0.05)
    args = parser.parse_args()

    setups = [
        Setup("1 carousel, FIFO order", "FIFO (lines as submitted)", 1),
        Setup("1 carousel, nearest-next", "nearest-next", 1),
        Setup("1 carousel, optimal route", "optimal route", 1),
        Setup("pod of 2, FIFO, pick-ahead", "FIFO (lines as submitted)", 2),
        Setup("pod of 2, optimal, pick-ahead", "optimal route", 2),
        Setup("pod of 3, optimal, pick-ahead", "optimal route", 3),
        Setup("pod of 2, optimal, 2 jobs at once", "optimal route", 2, 2),
    ]
    print(machine_line())
    print(
        f"{args.jobs} jobs of {args.lines_min}-{args.lines_max} lines, {args.positions} buckets, "
        f"{args.bucket_s:g} s/bucket + {args.start_stop_s:g} s start/stop, pick "
        f"{args.pick_s:g} s per line (CV {args.pick_cv:g}), seed {args.seed}"
    )
    print()
    print(
        "| configuration | picks/h | % of operator-bound limit | operator waiting | buckets/pick |"
    )
    print("|---|---|---|---|---|")
    started = time.perf_counter()
    results = []
    for setup in setups:
        result = run(setup, args)
        results.append(result)
        print(
            f"| {setup.label} | {result.per_hour:,.0f} | {result.per_hour / result.limit:.1%} | "
            f"{result.idle_s / result.seconds:.1%} | {result.buckets / result.picks:.2f} |",
            flush=True,
        )
    limit = results[0].limit
    print(f"| operator-bound limit (3600 / mean pick time) | {limit:,.0f} | 100 % | 0 % | — |")
    fifo, optimal = results[0], results[2]
    print()
    print(
        f"optimal vs FIFO, one carousel: {optimal.per_hour / fifo.per_hour - 1:+.1%} picks/h, "
        f"{1 - optimal.buckets / fifo.buckets:.1%} fewer buckets travelled"
    )
    picks = sum(r.picks for r in results)
    print(
        f"simulated {picks:,} picks ({len(setups) * args.jobs:,} jobs) in "
        f"{time.perf_counter() - started:.1f} s of wall time"
    )
    if args.e2e:
        asyncio.run(end_to_end(args.e2e, args.e2e_bucket_s, args.seed))


if __name__ == "__main__":
    main()
