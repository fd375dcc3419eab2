"""Takeover time of a two-gateway cell (issue 18), per fault kind.

Each run builds a fresh cell with the failover tests' harness (tests/ha/harness.py):
simulators in a process of their own (``simulate --move-log``), Debian's PostgreSQL in a
temporary directory, two ``serve`` processes on 127.0.0.2 and 127.0.0.3, each behind its
own proxies. Gateway A becomes active and reads its PLCs, B stands by; then the fault hits
A (``kill9``: kill -9; ``freeze``: SIGSTOP; ``partition``: A's links to PostgreSQL and the
PLCs go silent). A client asks B for a MOVE as soon as B's /v1/health says active, again
until one is accepted. Measured from the fault (wall clock), at the simulators (their
log, so no gateway's own account is trusted):

- first reading: B's first request on a PLC session;
- first MOVE: the first MOVE a PLC reads from B.

Also counted: MOVEs read by the PLCs without an intent (must be 0) and sessions overlapping
on one PLC (must be 0). Targets with ``--ttl 5``: kill -9 <= 7 s; freeze or partition
<= TTL + idle drop + release cooldown + 2 s.

    .venv/bin/python benchmarks/failover.py --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import OtherLoad, machine_line
from tests.ha.harness import Cell, CellSettings, GatewayProcess, poll_until_async
from tests.postgresql.server import PostgresServer

FAULTS = ("kill9", "freeze", "partition")


def _first(events: list[dict[str, object]], kind: str, address: str, after: float) -> float | None:
    for event in events:
        at = float(event["at"])  # type: ignore[arg-type]
        if event["event"] == kind and str(event["peer"]).startswith(f"{address}:") and at >= after:
            return at
    return None


async def _active(gateway: GatewayProcess) -> bool | None:
    data = await gateway.health()
    return True if data is not None and data["ha"]["role"] == "active" else None


async def one_run(
    postgres: PostgresServer, settings: CellSettings, fault: str
) -> tuple[float, float, int]:
    """(first reading, first MOVE) in seconds after the fault, and invariant violations."""
    with tempfile.TemporaryDirectory(prefix="failover-") as directory:
        cell = Cell(postgres, Path(directory), settings)
        try:
            await cell.start_simulators()
            a, b, _epoch = await cell.start_pair()
            fault_at = time.time()
            if fault == "kill9":
                await a.kill9()
            elif fault == "freeze":
                a.freeze()
            else:
                a.partition()
            limit = settings.ttl_s + (settings.idle_drop_s or 0) + settings.release_time_s + 60
            await poll_until_async(lambda: _active(b), limit, "gw-b active")
            position = 2
            while True:  # until B's MOVE is accepted (the PLC may still hold A's session)
                reply = await b.move("m1", position)
                if reply.status_code == 200:
                    break
                if time.time() - fault_at > limit:
                    raise TimeoutError(f"no MOVE accepted by gw-b: {reply.text}")
                await asyncio.sleep(0.05)  # a retry pace, not a wait for a result
            events = cell.events()
            read_at = _first(events, "first_request", b.address, fault_at)
            moved_at = _first(events, "move", b.address, fault_at)
            assert read_at is not None and moved_at is not None
            facts = await cell.invariants()
            violations = 0
            try:
                facts.assert_one_session_at_a_time()
                facts.assert_every_move_had_an_intent({a.address: a.epochs, b.address: b.epochs})
            except AssertionError as exc:
                print(f"  INVARIANT BROKEN ({fault}): {exc}", file=sys.stderr)
                violations = 1
            if fault == "freeze":
                a.thaw()
            return read_at - fault_at, moved_at - fault_at, violations
        finally:
            await cell.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--ttl", type=float, default=5.0, help="[ha] ttl_s")
    parser.add_argument("--renew", type=float, default=1.0, help="[ha] renew_s")
    parser.add_argument("--margin", type=float, default=0.5, help="[ha] margin_s")
    parser.add_argument("--idle-drop", type=float, default=1.0, help="the PLCs' idle_drop_s")
    parser.add_argument("--release-time", type=float, default=2.0, help="PLC release cooldown")
    parser.add_argument("--machines", type=int, default=2)
    parser.add_argument(
        "--takeover-connect",
        type=float,
        default=None,
        help="[ha] takeover_connect_s (default: the gateway's; 0: refusals count at once)",
    )
    args = parser.parse_args()
    settings = CellSettings(
        machines=args.machines,
        release_time_s=args.release_time,
        idle_drop_s=args.idle_drop,
        ttl_s=args.ttl,
        renew_s=args.renew,
        margin_s=args.margin,
        takeover_connect_s=args.takeover_connect,
    )
    print(machine_line())
    print(
        f"# ttl {args.ttl} s, renew {args.renew} s, margin {args.margin} s, idle drop "
        f"{args.idle_drop} s, release {args.release_time} s, {args.machines} PLCs, "
        f"{args.runs} runs per fault, takeover_connect_s "
        f"{'default' if args.takeover_connect is None else args.takeover_connect}"
    )
    postgres = PostgresServer()
    await asyncio.to_thread(postgres.start)
    others = OtherLoad()
    others.start()
    results: dict[str, list[tuple[float, float, int]]] = {}
    try:
        for fault in args.faults:
            for run in range(args.runs):
                result = await one_run(postgres, settings, fault)
                print(
                    f"  {fault} run {run + 1}: first reading {result[0]:.2f} s, "
                    f"first MOVE {result[1]:.2f} s",
                    flush=True,
                )
                results.setdefault(fault, []).append(result)
        other_pct = others.stop()
    finally:
        await asyncio.to_thread(postgres.stop)
    freeze_target = args.ttl + args.idle_drop + args.release_time + 2.0
    print(f"{'fault':<10} {'reading p50':>12} {'MOVE p50':>10} {'target':>8}  violations")
    for fault, runs in results.items():
        reading = statistics.median(r[0] for r in runs)
        moved = statistics.median(r[1] for r in runs)
        target = 7.0 if fault == "kill9" else freeze_target
        verdict = "ok" if moved <= target else "OVER"
        print(
            f"{fault:<10} {reading:>10.2f} s {moved:>8.2f} s {target:>6.1f} s  "
            f"{sum(r[2] for r in runs)}  {verdict}"
        )
    print(
        f"# other load during the runs: {other_pct:.0f}% of one core"
        + (" (DISTURBED)" if others.disturbed else "")
        + "; PostgreSQL's server processes count as other load (pg_ctl detaches them)"
    )


if __name__ == "__main__":
    asyncio.run(main())
