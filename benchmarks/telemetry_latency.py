"""How late the gateway learns of an arrival: port-3200 polling against Modbus telemetry.

For each telemetry source, one simulator (port-3200 listener, plus a Modbus listener on the
same model) and one gateway ``Machine`` run in this process, so the exact moment the model
reaches the target (``CarouselModel.arrival_time()``) and the moment the machine publishes
``MoveCompleted`` are on the same clock. The simulators answer with the field's delays:
port 3200 after a uniform 0.2–0.8 s, Modbus after ~50 ms per read. The machines use the
default poll intervals (port 3200: 0.2 s moving / 1.0 s idle; Modbus: 0.1 s / 0.5 s).
Both sources run at the same time on separate simulators (``--sequential`` to run one after
the other). Travel is at least 1 s, longer than any MOVE reply, as on a real carousel.

    .venv/bin/python benchmarks/telemetry_latency.py              # ~1.5 min, 30 moves each
    .venv/bin/python benchmarks/telemetry_latency.py --moves 200  # a p99 worth the name
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine_line, percentile
from carousel_gateway.config import MachineConfig
from carousel_gateway.fleet.events import Event, EventBus, MoveCompleted, MoveFailed
from carousel_gateway.fleet.machine import Machine
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.sim.carousel import CarouselModel, MoveResponse
from carousel_gateway.sim.modbus_server import ModbusSimulatorServer, ModbusSimulatorSettings
from carousel_gateway.sim.server import SimulatorServer, SimulatorSettings

POSITIONS = 30


class RecordingModel(CarouselModel):
    """Remembers when each started move will reach its target (the model's own clock)."""

    last_arrival: float | None = None

    def move(self, index: int) -> MoveResponse:
        outcome = super().move(index)
        if outcome is MoveResponse.STARTED:
            self.last_arrival = self.arrival_time()
        return outcome


class JitteredSettings(SimulatorSettings):
    """Port-3200 settings whose reply delay is drawn anew for every reply."""

    __slots__ = ("high", "low", "rng")

    def __init__(self, low: float, high: float, rng: random.Random) -> None:
        super().__init__()
        self.low, self.high, self.rng = low, high, rng

    @property  # type: ignore[override]
    def reply_delay_s(self) -> float:
        return self.rng.uniform(self.low, self.high)

    @reply_delay_s.setter
    def reply_delay_s(self, value: float) -> None:
        pass  # fixed by low/high


async def run_source(source: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    model = RecordingModel(POSITIONS, args.seconds_per_position, clock=time.monotonic)
    plc = SimulatorServer(
        model, settings=JitteredSettings(args.plc_delay[0], args.plc_delay[1], rng)
    )
    await plc.start()
    modbus: ModbusSimulatorServer | None = None
    values: dict[str, Any] = {
        "id": f"bench-{source}",
        "name": f"bench {source}",
        "host": "127.0.0.1",
        "port": plc.port,
        "kind": "simulator",
        "positions": POSITIONS,
        "move_timeout_s": 60.0,
    }
    if source == "modbus":
        modbus = ModbusSimulatorServer(
            model, settings=ModbusSimulatorSettings(reply_delay_s=args.modbus_delay)
        )
        await modbus.start()
        values |= {"telemetry": "modbus", "modbus_port": modbus.port}
    bus = EventBus()
    completed_at: dict[int, float] = {}
    failures: list[MoveFailed] = []
    ready = asyncio.Event()

    def on_event(event: Event) -> None:
        snapshot = machine.snapshot
        if snapshot.position is not None and snapshot.connection is ConnectionState.CONNECTED:
            ready.set()
        if isinstance(event, MoveCompleted):
            completed_at[event.command_id] = time.monotonic()
        elif isinstance(event, MoveFailed):
            failures.append(event)

    bus.subscribe(on_event)
    machine = Machine(MachineConfig.model_validate(values), bus)
    machine.start()
    latencies: list[float] = []
    command_latencies: list[float] = []
    try:
        await asyncio.wait_for(ready.wait(), 30)
        for _ in range(args.moves):
            distance = rng.randint(args.min_distance, args.min_distance + 2) * rng.choice((1, -1))
            index = (model.position_index + distance) % POSITIONS
            executed = await machine.execute(1, machine.to_api_position(index))
            arrival = model.last_arrival
            assert executed.outcome is not None and arrival is not None
            outcome = await asyncio.wait_for(executed.outcome, 60)
            command_latencies.append(executed.accepted.latency_s)
            if isinstance(outcome, MoveCompleted):
                latencies.append(completed_at[outcome.command_id] - arrival)
    finally:
        await machine.stop()
        await plc.stop()
        if modbus is not None:
            await modbus.stop()
    return {
        "source": source,
        "latencies": latencies,
        "commands": command_latencies,
        "failures": len(failures),
        "fallbacks": machine.telemetry_fallbacks,
    }


def report(result: dict[str, Any]) -> str:
    values = result["latencies"]
    if not values:
        return f"{result['source']:>9}: no completed moves ({result['failures']} failed)"
    ms = [v * 1000 for v in values]
    return (
        f"{result['source']:>9}: arrival → MoveCompleted  median {percentile(ms, 50):6.0f} ms"
        f"  p99 {percentile(ms, 99):6.0f} ms  min {min(ms):5.0f}  max {max(ms):5.0f} ms"
        f"  (n={len(ms)}, failed {result['failures']}, fallbacks {result['fallbacks']})"
        f"\n{'':>11}MOVE command accepted after median "
        f"{percentile(result['commands'], 50) * 1000:.0f} ms (interlock read + MOVE reply)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moves", type=int, default=30, help="moves per source (default 30)")
    parser.add_argument(
        "--sources", default="port3200,modbus", help="comma list of port3200, modbus"
    )
    parser.add_argument("--seconds-per-position", type=float, default=0.25)
    parser.add_argument(
        "--min-distance", type=int, default=4, help="buckets per move: this to this + 2"
    )
    parser.add_argument("--plc-delay", type=float, nargs=2, default=(0.2, 0.8), metavar="S")
    parser.add_argument("--modbus-delay", type=float, default=0.05, metavar="S")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sequential", action="store_true", help="one source at a time")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # link chatter at shutdown is not a result
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if not set(sources) <= {"port3200", "modbus"}:
        parser.error("--sources takes port3200 and/or modbus")

    print(machine_line())
    print(
        f"# pymodbus {version('pymodbus')} | {args.moves} moves per source, "
        f"{args.seconds_per_position:g} s/bucket, {args.min_distance}–{args.min_distance + 2} "
        f"buckets | port-3200 reply {args.plc_delay[0]:g}–{args.plc_delay[1]:g} s, "
        f"Modbus reply {args.modbus_delay * 1000:g} ms per read | "
        f"{'sequential' if args.sequential else 'sources run concurrently'}"
    )
    started = time.perf_counter()
    if args.sequential:
        results = [await run_source(s, args, args.seed + i) for i, s in enumerate(sources)]
    else:
        results = await asyncio.gather(
            *(run_source(s, args, args.seed + i) for i, s in enumerate(sources))
        )
    for result in results:
        print(report(result))
    print(f"# took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
