"""Two gateway processes of one cell, simulators in a process of their own, a real
PostgreSQL, and a proxy per gateway and link so a test can cut one gateway off.

Each gateway listens on its own loopback address (127.0.0.2, 127.0.0.3) and reaches every
PLC and PostgreSQL through proxies whose upstream side binds that address: the
simulators' log then names, for every session and MOVE, the gateway it came from. The
proxies run on the test's event loop, so everything here that blocks (a query, a process
wait, pg_ctl) runs on a thread.

Faults: ``kill9``, ``freeze``/``thaw`` (SIGSTOP/SIGCONT), ``partition``/``heal`` (every
link of one gateway), and PostgreSQL stopped at once (``Cell.stop_postgres``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from carousel_gateway.sim.event_log import read_events
from tests.postgresql.server import PostgresServer

from .processes import free_port_run, poll_until, wait_for_events
from .proxy import TcpProxy

__all__ = ["Cell", "CellSettings", "GatewayProcess", "Invariants"]

CLI = str(Path(sys.executable).parent / "carousel-gateway")
CELL = "cell_ha"


@dataclass(frozen=True)
class CellSettings:
    """Timings of one cell (short by default: the test group runs in minutes)."""

    machines: int = 2
    positions: int = 30
    seconds_per_position: float = 0.05
    release_time_s: float = 0.3
    idle_drop_s: float | None = 1.0
    ttl_s: float = 1.5
    renew_s: float = 0.3
    margin_s: float = 0.3
    #: [ha] takeover_connect_s (None: the gateway's default).
    takeover_connect_s: float | None = None
    #: A workstation "station_1" ("Puesto 1") on every machine: pick jobs on PostgreSQL.
    workstation: bool = False
    #: TOML appended to both gateways' configs (``[[workstations]]``, say).
    extra_config: str = ""


def spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a process in a process group of its own (killed whole at the end), its output
    appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class GatewayProcess:
    """One ``carousel-gateway serve`` with its config, its log and its proxies."""

    instance: str
    address: str
    directory: Path
    plc_proxies: list[TcpProxy]
    db_proxy: TcpProxy
    http_port: int = field(default=0)
    ws_port: int = field(default=0)
    process: subprocess.Popen[bytes] | None = None
    #: Epochs this instance was seen to hold (from /v1/health).
    epochs: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.instance}.log"

    def write_config(self, journal_url: str, settings: CellSettings) -> Path:
        self.http_port = _free_port(self.address)
        self.ws_port = _free_port(self.address)
        machines = "".join(
            f"""
[[machines]]
id = "m{n + 1}"
name = "Carousel {n + 1}"
host = "127.0.0.1"
port = {proxy.port}
kind = "plc"
positions = {settings.positions}
poll_idle_s = 0.2
request_timeout_s = 1.0
connect_timeout_s = 1.0
backoff_initial_s = 0.1
backoff_max_s = 0.5
"""
            for n, proxy in enumerate(self.plc_proxies)
        )
        takeover = (
            ""
            if settings.takeover_connect_s is None
            else f"takeover_connect_s = {settings.takeover_connect_s}\n"
        )
        if settings.workstation:
            every = ", ".join(f'"m{n + 1}"' for n in range(len(self.plc_proxies)))
            machines += f"""
[[workstations]]
id = "station_1"
name = "Puesto 1"
machines = [{every}]
"""
        text = f"""log_level = "INFO"
[websocket]
host = "{self.address}"
port = {self.ws_port}
[http]
host = "{self.address}"
port = {self.http_port}
[journal]
url = "{journal_url}"
[ha]
enabled = true
cell = "{CELL}"
instance = "{self.instance}"
advertise_url = "{self.url}"
advertise_ws_url = "ws://{self.address}:{self.ws_port}"
ttl_s = {settings.ttl_s}
renew_s = {settings.renew_s}
margin_s = {settings.margin_s}
{takeover}{machines}{settings.extra_config}"""
        path = self.directory / f"{self.instance}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    async def start(self, config: Path) -> None:
        self.process = await asyncio.to_thread(
            spawn, [CLI, "serve", "--config", str(config)], self.log_path
        )

    # -- what it says -------------------------------------------------------------------

    async def health(self) -> dict[str, Any] | None:
        """``data`` of /v1/health, or None while it does not answer."""
        try:
            async with httpx.AsyncClient(timeout=1.0) as http:
                reply = await http.get(f"{self.url}/v1/health")
        except httpx.HTTPError:
            return None
        if reply.status_code != 200:
            return None
        data: dict[str, Any] = reply.json()["data"]
        epoch = (data.get("ha") or {}).get("epoch")
        if epoch is not None:
            self.epochs.add(int(epoch))
        return data

    async def wait_role(self, role: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll /v1/health until ``data.ha.role`` is ``role``; returns ``data.ha``."""
        latest: dict[str, Any] = {}

        async def probe() -> dict[str, Any] | None:
            data = await self.health()
            if data is not None:
                latest.update(data["ha"])
                if data["ha"]["role"] == role:
                    return dict(data["ha"])
            return None

        deadline = time.monotonic() + timeout
        while True:
            found = await probe()
            if found is not None:
                return found
            exited = self.process is not None and self.process.poll() is not None
            if exited or time.monotonic() > deadline:
                state = "exited, " if exited else ""
                raise TimeoutError(
                    f"{self.instance} ({state}not {role} within {timeout} s; last: {latest}); "
                    f"log:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.05)

    async def move(self, machine: str, position: int, *, wait: bool = True) -> httpx.Response:
        """POST a MOVE (waiting for arrival unless told not to)."""
        query = "?wait=arrival" if wait else ""
        async with httpx.AsyncClient(timeout=60.0) as http:
            return await http.post(
                f"{self.url}/v1/machines/{machine}/move{query}", json={"position": position}
            )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    # -- faults -------------------------------------------------------------------------

    def _signal(self, sig: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, sig)

    async def kill9(self) -> None:
        """kill -9, then reap it."""
        self._signal(signal.SIGKILL)
        assert self.process is not None
        await asyncio.to_thread(self.process.wait, 30)

    async def terminate(self) -> None:
        """A graceful stop (SIGTERM: links closed, lease released), then reap it."""
        self._signal(signal.SIGTERM)
        assert self.process is not None
        await asyncio.to_thread(self.process.wait, 60)

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def partition(self) -> None:
        """Cut it off from PostgreSQL and every PLC, silently."""
        for proxy in (*self.plc_proxies, self.db_proxy):
            proxy.partition()

    def heal(self) -> None:
        for proxy in (*self.plc_proxies, self.db_proxy):
            proxy.heal()

    async def stop(self) -> None:
        """Kill the whole process group (SIGKILL also ends a stopped process)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await asyncio.to_thread(self.process.wait, 30)
        for proxy in (*self.plc_proxies, self.db_proxy):
            await proxy.close()


@dataclass
class Invariants:
    """What the simulators' log and ``move_intents`` must show, whatever the faults."""

    events: list[dict[str, Any]]
    intents: list[dict[str, Any]]
    lost_events: int

    def assert_one_session_at_a_time(self) -> None:
        """Never two sessions at once on one PLC (opened and closed in turn, per port)."""
        open_by_port: dict[int, int | None] = {}
        for event in self.events:
            port = event["port"]
            if event["event"] == "session_opened":
                assert open_by_port.get(port) is None, ("two sessions at once", event)
                open_by_port[port] = event["session"]
            elif event["event"] == "session_closed":
                assert open_by_port.get(port) == event["session"], event
                open_by_port[port] = None

    def assert_every_move_had_an_intent(self, epochs_by_address: dict[str, set[int]]) -> None:
        """Every MOVE the PLCs read has its own intent committed before it, of an epoch the
        sending gateway held (the peer's address names the gateway)."""
        unused = list(self.intents)
        for move in (e for e in self.events if e["event"] == "move"):
            address = str(move["peer"]).rsplit(":", 1)[0]
            epochs = epochs_by_address[address]
            match = next(
                (
                    row
                    for row in unused
                    if row["machine_id"] == f"m{move['machine']}"
                    and row["target"] == move["argument"] + 1
                    and row["intent_epoch"] in epochs
                    and row["created_at"].timestamp() <= move["at"]
                ),
                None,
            )
            assert match is not None, ("a MOVE without an earlier intent", move, self.intents)
            unused.remove(match)

    def assert_orphans_lost_once(self, dead_epoch: int) -> int:
        """Every intent of ``dead_epoch`` left without an outcome became ``lost``, and the
        journal told it once each. Returns how many there were."""
        orphans = [
            row
            for row in self.intents
            if row["intent_epoch"] == dead_epoch
            and row["outcome"] not in ("completed", "failed", "refused")
        ]
        assert all(row["outcome"] == "lost" for row in orphans), orphans
        assert self.lost_events == len([r for r in self.intents if r["outcome"] == "lost"])
        return len(orphans)

    def sessions_from(self, address: str, after: float = 0.0) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["event"] == "session_opened"
            and str(e["peer"]).startswith(f"{address}:")
            and e["at"] >= after
        ]

    def moves_from(self, address: str, after: float = 0.0) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["event"] == "move"
            and str(e["peer"]).startswith(f"{address}:")
            and e["at"] >= after
        ]


class Cell:
    """The simulators, PostgreSQL and two gateways ``a`` (127.0.0.2) and ``b`` (127.0.0.3)."""

    def __init__(self, postgres: PostgresServer, directory: Path, settings: CellSettings) -> None:
        self.postgres = postgres
        self.directory = directory
        self.settings = settings
        self.move_log = directory / "moves.jsonl"
        self.sim_port = 0
        self.simulators: subprocess.Popen[bytes] | None = None
        self.journal_url = ""
        self.a: GatewayProcess | None = None
        self.b: GatewayProcess | None = None

    async def start_simulators(self) -> None:
        s = self.settings
        self.sim_port = free_port_run(s.machines)
        command = [
            CLI, "simulate", "--machines", str(s.machines), "--port", str(self.sim_port),
            "--host", "127.0.0.1", "--positions", str(s.positions),
            "--seconds-per-position", str(s.seconds_per_position),
            "--release-time", str(s.release_time_s), "--move-log", str(self.move_log),
        ]  # fmt: skip
        if s.idle_drop_s is not None:
            command += ["--idle-drop", str(s.idle_drop_s)]
        self.simulators = await asyncio.to_thread(spawn, command, self.directory / "simulators.log")
        await wait_for_events(
            self.move_log,
            lambda events: sum(e["event"] == "listening" for e in events) == s.machines,
            timeout=30,
            what="the simulators listening",
        )

    async def gateway(self, instance: str, address: str) -> GatewayProcess:
        """Start one gateway (proxies first); returns once its process runs."""
        if not self.journal_url:
            self.journal_url = await asyncio.to_thread(self.postgres.url_for_new_schema)
        plc_proxies = [
            TcpProxy(self.sim_port + n, source_host=address) for n in range(self.settings.machines)
        ]
        # From 127.0.0.1: the test cluster's pg_hba.conf trusts that address only.
        db_proxy = TcpProxy(self.postgres.port)
        for proxy in (*plc_proxies, db_proxy):
            await proxy.start()
        gateway = GatewayProcess(instance, address, self.directory, plc_proxies, db_proxy)
        url = self.journal_url.replace(
            f"127.0.0.1:{self.postgres.port}/", f"127.0.0.1:{db_proxy.port}/"
        )
        await gateway.start(gateway.write_config(url, self.settings))
        if instance == "gw-a":
            self.a = gateway
        else:
            self.b = gateway
        return gateway

    async def start_pair(self) -> tuple[GatewayProcess, GatewayProcess, int]:
        """A (active, its first reading done) then B (standby naming A); returns A's epoch."""
        a = await self.gateway("gw-a", "127.0.0.2")
        ha = await a.wait_role("active")
        await self.wait_connected(a)
        b = await self.gateway("gw-b", "127.0.0.3")
        await poll_until_async(lambda: _standby_naming(b, "gw-a"), 30, "gw-b standby naming gw-a")
        return a, b, int(ha["epoch"])

    async def wait_connected(self, gateway: GatewayProcess, timeout: float = 30.0) -> None:
        """Until every PLC has had a session from ``gateway`` that sent a request."""
        machines = set(range(1, self.settings.machines + 1))
        await wait_for_events(
            self.move_log,
            lambda events: (
                machines
                <= {
                    e["machine"]
                    for e in events
                    if e["event"] == "first_request" and str(e["peer"]).startswith(gateway.address)
                }
            ),
            timeout=timeout,
            what=f"{gateway.instance} reading every PLC",
        )

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.move_log)

    async def invariants(self) -> Invariants:
        intents, lost = await asyncio.to_thread(self._read_database)
        return Invariants(self.events(), intents, lost)

    def _read_database(self) -> tuple[list[dict[str, Any]], int]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.journal_url, row_factory=dict_row) as connection:
            intents = connection.execute("SELECT * FROM move_intents ORDER BY id").fetchall()
            lost = connection.execute(
                "SELECT count(*) AS n FROM journal WHERE kind = 'move_failed' "
                "AND reasons LIKE '%failover_lost%'"
            ).fetchone()
        return intents, int(lost["n"]) if lost else 0

    async def database_activity(self) -> list[dict[str, Any]]:
        """Who holds what in PostgreSQL now (for a failure's message)."""
        return await asyncio.to_thread(self._activity)

    def _activity(self) -> list[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.postgres.url, row_factory=dict_row) as connection:
            return connection.execute(
                "SELECT pid, client_addr::text, state, wait_event_type, wait_event, "
                "pg_blocking_pids(pid) AS blocked_by, left(query, 120) AS query "
                "FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()"
            ).fetchall()

    async def stop_postgres(self) -> None:
        """PostgreSQL stopped at once (``-m immediate``: as a crash)."""
        await asyncio.to_thread(self.postgres.stop_keeping_data)

    async def start_postgres(self) -> None:
        await asyncio.to_thread(self.postgres.start_again)

    async def close(self) -> None:
        for gateway in (self.a, self.b):
            if gateway is not None:
                await gateway.stop()
        if self.simulators is not None and self.simulators.returncode is None:
            os.killpg(self.simulators.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.simulators.wait, 30)
            except subprocess.TimeoutExpired:
                os.killpg(self.simulators.pid, signal.SIGKILL)
                await asyncio.to_thread(self.simulators.wait, 30)


async def _standby_naming(gateway: GatewayProcess, active: str) -> bool | None:
    data = await gateway.health()
    if data is None:
        return None
    ha = data["ha"]
    return True if ha["role"] == "standby" and ha["active_instance"] == active else None


async def poll_until_async(probe: Any, timeout: float, what: str) -> Any:
    """``poll_until`` for a coroutine probe."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


__all__ += ["poll_until", "poll_until_async"]
