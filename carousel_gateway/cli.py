"""The ``carousel-gateway`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from carousel_gateway import __version__
from carousel_gateway.config import (
    WILDCARD_HOSTS,
    ConfigError,
    GatewayConfig,
    load_config,
    parse_config,
)

if TYPE_CHECKING:
    import random

    from carousel_gateway.app import Gateway
    from carousel_gateway.wire import JobSubmission, MachineInfo

__all__ = [
    "DEFAULT_URL",
    "ConfigOption",
    "TokenOption",
    "UrlOption",
    "app",
    "asyncapi",
    "config_app",
    "config_check",
    "demo_job",
    "history",
    "job_app",
    "job_demo",
    "job_list",
    "job_show",
    "job_submit",
    "main",
    "move",
    "serve",
    "simulate",
    "startup_banner",
    "status",
    "token_app",
    "token_new",
    "version",
    "watch",
]

app = typer.Typer(
    help="Real-time gateway for vertical storage carousels (Delta AS PLCs).",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
job_app = typer.Typer(help="Pick jobs: submit, list, show (docs/picking.md).", no_args_is_help=True)
opcua_app = typer.Typer(help="OPC UA server users.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(token_app, name="token")
app.add_typer(job_app, name="job")
app.add_typer(opcua_app, name="opcua")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML (or legacy JSON) config; default: embedded demo"),
]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load_or_exit(path: Path | None) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            typer.echo(line, err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: ConfigOption = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING, ERROR")] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address both servers listen on (overrides [websocket]/[http] host)"),
    ] = None,
    ws_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="WebSocket API port (overrides [websocket] port)"),
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="REST, dashboard and docs port (overrides [http] port)"
        ),
    ] = None,
) -> None:
    """Run the gateway: the fleet and its servers, until SIGINT/SIGTERM."""
    from carousel_gateway.api.auth import install_log_redaction
    from carousel_gateway.app import BindError, Gateway
    from carousel_gateway.database import DatabaseError

    settings = _with_overrides(_load_or_exit(config), host, ws_port, http_port)
    _setup_logging((log_level or settings.log_level).upper())
    install_log_redaction()  # tokens never reach the log, from the first record on
    logging.getLogger("carousel_gateway").info(
        "carousel-gateway %s starting (%s)", __version__, config or "embedded default config"
    )
    try:
        asyncio.run(Gateway(settings).run(on_ready=_print_addresses))
    except BindError as exc:
        flag = _SETTING_FLAGS.get(exc.setting)
        hint = f"; set {exc.setting} in the config" + (f" or pass {flag}" if flag else "")
        typer.echo(f"carousel-gateway: cannot start: {exc.reason}{hint}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"carousel-gateway: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None
    except DatabaseError as exc:
        typer.echo(f"carousel-gateway: cannot start: journal: {exc}", err=True)
        raise typer.Exit(1) from None


#: The ``serve`` option that overrides each setting a start-up error may name.
_SETTING_FLAGS = {
    "[websocket] port": "--ws-port",
    "[http] port": "--http-port",
    "[websocket] host": "--host",
    "[http] host": "--host",
}


def _with_overrides(
    settings: GatewayConfig, host: str | None, ws_port: int | None, http_port: int | None
) -> GatewayConfig:
    """The config with ``serve``'s options applied, validated again as a whole (the host
    also feeds the allowed Host names), so an option cannot make a config the file could
    not."""
    data = settings.model_dump()
    for table, port in (("websocket", ws_port), ("http", http_port)):
        if host is not None:
            data[table]["host"] = host
        if port is not None:
            data[table]["port"] = port
    try:
        return parse_config(data, source="command line")
    except ConfigError as exc:
        for line in exc.problems:
            typer.echo(line, err=True)
        raise typer.Exit(2) from None


def _print_addresses(gateway: Gateway) -> None:
    """Once everything listens: where to point a browser or a client, and how to stop."""
    assert gateway.websocket is not None
    opcua = gateway.opcua.url if gateway.opcua is not None else None
    typer.echo(
        startup_banner(gateway.config, gateway.websocket.port, gateway.http_port, opcua)
    )


def startup_banner(
    settings: GatewayConfig, ws_port: int, http_port: int, opcua_url: str | None = None
) -> str:
    """The addresses ``serve`` prints: clickable ones (``localhost`` for a wildcard bind,
    the real bound ports, https/wss under TLS), not the bind address ``0.0.0.0``."""
    tls = settings.security.tls
    web = f"{'https' if tls else 'http'}://{_url_host(settings.http.host)}:{http_port}"
    api = f"{'wss' if tls else 'ws'}://{_url_host(settings.websocket.host)}:{ws_port}"
    count = _count(len(settings.machines), "machine")
    mqtt = settings.mqtt
    broker = ""
    if mqtt.enabled:
        where = f"{'mqtts' if mqtt.uses_tls else 'mqtt'}://{_url_host(mqtt.host)}:{mqtt.port}"
        node = (
            f"spBv1.0/{mqtt.group_id}/…/{mqtt.edge_node_id}"
            if mqtt.format == "sparkplug"
            else f"carousel/{mqtt.group_id}/{mqtt.edge_node_id}/…"
        )
        broker = f"  MQTT            {node} on {where}\n"
    return (
        f"carousel-gateway is running ({count}):\n"
        f"  dashboard       {web}/\n"
        f"  WebSocket API   {api}\n"
        f"  API docs        {web}/docs\n"
        f"{broker}"
        + (f"  OPC UA          {opcua_url}\n" if opcua_url else "")
        + "Press Ctrl+C to stop."
    )


def _url_host(host: str) -> str:
    """A bind address as a URL's host: wildcards as ``localhost``, IPv6 in brackets."""
    if host in WILDCARD_HOSTS:
        return "localhost"
    return f"[{host}]" if ":" in host else host


def _count(n: int, noun: str) -> str:
    """``1 machine``, ``2 machines``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@app.command()
def simulate(
    machines: Annotated[int, typer.Option(min=1, max=1000, help="How many simulators")] = 2,
    port: Annotated[int, typer.Option(min=1, max=65535, help="First port")] = 3200,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    positions: Annotated[int, typer.Option(min=2, max=256)] = 30,
    seconds_per_position: Annotated[float, typer.Option(min=0.001)] = 1.0,
    reply_delay: Annotated[float, typer.Option(min=0.0, help="Seconds before each reply")] = 0.0,
    release_time: Annotated[
        float, typer.Option(min=0.0, help="Seconds connections are refused after a close")
    ] = 0.0,
    idle_drop: Annotated[
        float | None,
        typer.Option(min=0.001, help="Close a session silent this many seconds (default: never)"),
    ] = None,
    move_log: Annotated[
        Path | None,
        typer.Option(
            help="Append a JSON line per MOVE read, per session opened, closed or refused, "
            "and per session's first request (flushed per line, for tests in another process)"
        ),
    ] = None,
) -> None:
    """Run N carousel simulators on ports P, P+1, ... (port-3200 protocol)."""
    from carousel_gateway.sim.carousel import CarouselModel
    from carousel_gateway.sim.event_log import EventLogWriter
    from carousel_gateway.sim.server import SimulatorServer, SimulatorSettings

    _setup_logging("INFO")
    try:
        writer = EventLogWriter(move_log) if move_log is not None else None
    except OSError as exc:
        typer.echo(f"carousel-gateway simulate: cannot open the move log: {exc}", err=True)
        raise typer.Exit(1) from None

    def observer(machine: int) -> Callable[[dict[str, object]], None] | None:
        if writer is None:
            return None
        return lambda event: writer.write({"machine": machine, **event})

    async def run() -> None:
        servers = []
        try:
            for offset in range(machines):
                model = CarouselModel(positions, seconds_per_position)
                settings = SimulatorSettings(
                    reply_delay_s=reply_delay, release_time_s=release_time, idle_drop_s=idle_drop
                )
                server = SimulatorServer(model, host, port + offset, settings)
                server.on_event = observer(offset + 1)
                await server.start()
                servers.append(server)
                if server.on_event is not None:
                    # Listening now: a test waits for this line, never for a probe (a probe
                    # would take the single session).
                    server.on_event({"event": "listening", "port": server.port, "at": time.time()})
                typer.echo(f"simulator {offset + 1}: {host}:{server.port} ({positions} positions)")
            stopped = asyncio.Event()
            # SIGTERM ends it as SIGINT does: sessions closed, the move log written out.
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
            await stopped.wait()
        finally:
            for server in servers:
                await server.stop()
            if writer is not None:
                await asyncio.to_thread(writer.close)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        typer.echo(f"carousel-gateway simulate: cannot listen: {exc}", err=True)
        raise typer.Exit(1) from None


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="Config file to check")]) -> None:
    """Validate a config file: one line per problem, exit code 2 if any."""
    settings = _load_or_exit(path)
    typer.echo(
        f"{path}: OK ({_count(len(settings.machines), 'machine')}: "
        f"{', '.join(m.id for m in settings.machines)})"
    )


@token_app.command("new")
def token_new(
    role: Annotated[str, typer.Option(help="viewer or operator")] = "viewer",
    name: Annotated[str, typer.Option(help="Who the token is for (shown in the journal)")] = "",
) -> None:
    """Print a fresh token and the config lines that accept it (only its hash is stored)."""
    if role not in ("viewer", "operator"):
        typer.echo("role must be 'viewer' or 'operator'", err=True)
        raise typer.Exit(2)
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    label = name or f"{role}-{digest[:8]}"
    typer.echo(f"token: {token}")
    typer.echo("\nadd to the config file:\n")
    typer.echo(f'[[auth.tokens]]\nname = "{label}"\nrole = "{role}"\nsha256 = "{digest}"')


@opcua_app.command("user")
def opcua_user(
    name: Annotated[str, typer.Option(help="The OPC UA user name")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="CAROUSEL_GATEWAY_OPCUA_PASSWORD",
            help="Asked for when not given (never put it on a command line others see)",
        ),
    ],
    role: Annotated[str, typer.Option(help="viewer or operator")] = "viewer",
) -> None:
    """Print the config lines for an OPC UA user (only a scrypt hash of the password)."""
    from carousel_gateway.api.opcua.passwords import hash_password

    if role not in ("viewer", "operator"):
        typer.echo("role must be 'viewer' or 'operator'", err=True)
        raise typer.Exit(2)
    if len(password) < 8:
        typer.echo("the password must have at least 8 characters", err=True)
        raise typer.Exit(2)
    typer.echo("add to the config file:\n")
    typer.echo(
        f'[[opcua.users]]\nname = "{name}"\nrole = "{role}"\n'
        f'password_hash = "{hash_password(password)}"'
    )


UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="CAROUSEL_GATEWAY_URL",
        help="Gateway WebSocket URL (the two instances of a cell: both, comma-separated)",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="CAROUSEL_GATEWAY_TOKEN", help="API token (if auth is on)"),
]
DEFAULT_URL = "ws://localhost:8765"


def _run_client(coro_factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a client coroutine; print typed client errors as one line, exit code 1."""
    from carousel_gateway.client import CarouselError

    try:
        asyncio.run(coro_factory())
    except CarouselError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"error: cannot reach the gateway: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def status(
    machine: Annotated[str | None, typer.Argument(help="Machine id (default: all)")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Show the live state of one machine or all of them, as a table."""
    from rich.console import Console

    from carousel_gateway.cli_views import status_table
    from carousel_gateway.client import CarouselClient

    async def run() -> None:
        async with CarouselClient(url, token=token, reconnect=False) as client:
            reply = await client.status(machine)
        Console().print(status_table(reply, client.machines))

    _run_client(run)


@app.command()
def move(
    machine: Annotated[str, typer.Argument(help="Machine id")],
    bucket: Annotated[int, typer.Argument(help="Bucket number to bring to the window")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it arrives (or fails)")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Move a carousel to a bucket. Exit code 0 only if it arrived (or, without --wait, if
    the PLC took the command)."""
    from carousel_gateway.client import CarouselClient
    from carousel_gateway.wire import MoveCompletedMessage, MoveFailedMessage

    outcome_code = 0

    async def run() -> None:
        nonlocal outcome_code
        async with CarouselClient(url, token=token, reconnect=False) as client:
            result = await client.move(machine, bucket, wait=wait)
        if isinstance(result, MoveCompletedMessage):
            typer.echo(f"{machine}: arrived at {result.position} after {result.duration_s:.1f} s")
        elif isinstance(result, MoveFailedMessage):
            typer.echo(
                f"{machine}: move to {result.target} failed: {', '.join(result.reasons)} "
                f"(stopped at {result.position})"
            )
            outcome_code = 3
        elif result.data.skipped:
            typer.echo(f"{machine}: already at {bucket}; nothing sent")
        else:
            # command_id numbers the gateway's requests (per boot, fleet-wide): the journal
            # and the move's outcome carry it. It is not the PLC command (1, MOVE).
            typer.echo(f"{machine}: moving to {bucket} (request #{result.data.command_id})")

    _run_client(run)
    raise typer.Exit(outcome_code)


@app.command()
def history(
    machine: Annotated[str | None, typer.Argument(help="Machine id (default: all)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many entries")] = 30,
    kind: Annotated[
        list[str] | None, typer.Option("--kind", help="Only this kind (repeatable)")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """The journal: who moved what, how it ended, faults and links (newest first)."""
    from rich.console import Console

    from carousel_gateway.cli_views import history_table
    from carousel_gateway.client import CarouselClient

    async def run() -> None:
        async with CarouselClient(url, token=token, reconnect=False) as client:
            page = await client.history(machine, kinds=kind, limit=limit)
            counters = await client.counters(machine)
        Console().print(history_table(page, counters))

    _run_client(run)


@app.command()
def watch(url: UrlOption = DEFAULT_URL, token: TokenOption = None) -> None:
    """A live table of every machine and the event feed, until Ctrl-C."""
    from carousel_gateway.cli_views import watch_screen

    with contextlib.suppress(KeyboardInterrupt):
        _run_client(lambda: watch_screen(url, token))


@job_app.command("submit")
def job_submit(
    file: Annotated[str, typer.Argument(help="A job as JSON (docs/picking.md), or - for stdin")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Submit a pick job from a JSON file; prints the job as the gateway queued it."""
    from pydantic import ValidationError

    from carousel_gateway.wire import JobSubmission

    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        typer.echo(f"error: cannot read {file}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None
    try:
        submission = JobSubmission.model_validate_json(text)
    except ValidationError as exc:
        for problem in exc.errors()[:10]:
            where = ".".join(str(part) for part in problem["loc"]) or "job"
            what = "unknown key" if problem["type"] == "extra_forbidden" else problem["msg"]
            typer.echo(f"{file}: {where}: {what}", err=True)
        raise typer.Exit(2) from None
    _submit(submission, url, token)


def _submit(submission: JobSubmission, url: str, token: str | None) -> None:
    from rich.console import Console

    from carousel_gateway.cli_views import job_detail
    from carousel_gateway.client import CarouselClient

    async def run() -> None:
        async with CarouselClient(url, token=token, reconnect=False) as client:
            accepted = await client.submit_job(submission)
        verb = "queued" if accepted.created else "already known (same content): not queued again"
        typer.echo(f"job {accepted.job.job_id} {verb}")
        Console().print(job_detail(accepted.job))

    _run_client(run)


@job_app.command("list")
def job_list(
    workstation: Annotated[
        str | None, typer.Option("--workstation", "-w", help="Only this workstation's jobs")
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(help="Only jobs in this state: queued, active, paused, completed, cancelled"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="The newest this many")] = 30,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Pick jobs, newest first."""
    from rich.console import Console

    from carousel_gateway.cli_views import jobs_table
    from carousel_gateway.client import CarouselClient
    from carousel_gateway.wire import JobState

    try:
        wanted = JobState(state) if state is not None else None
    except ValueError:
        known = ", ".join(s.value for s in JobState)
        typer.echo(f"error: unknown state {state!r}; one of {known}", err=True)
        raise typer.Exit(2) from None

    async def run() -> None:
        async with CarouselClient(url, token=token, reconnect=False) as client:
            jobs = await client.jobs(workstation, wanted, limit=limit)
        Console().print(jobs_table(jobs))

    _run_client(run)


@job_app.command("show")
def job_show(
    job_id: Annotated[str, typer.Argument(help="The job's id")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """One pick job: its lines and what was picked, the route left, the stats."""
    from rich.console import Console

    from carousel_gateway.cli_views import job_detail
    from carousel_gateway.client import CarouselClient

    async def run() -> None:
        async with CarouselClient(url, token=token, reconnect=False) as client:
            job = await client.job(job_id)
        Console().print(job_detail(job))

    _run_client(run)


@job_app.command("demo")
def job_demo(
    lines: Annotated[int, typer.Option(min=1, max=500, help="How many lines")] = 5,
    workstation: Annotated[
        str, typer.Option("--workstation", "-w", help="Where to pick")
    ] = "station_1",
    machine: Annotated[
        list[str] | None,
        typer.Option("--machine", "-m", help="Only these carousels (default: every one)"),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed, for the same job again")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Submit a random job (to the embedded demo's station_1 by default) and print it."""
    from carousel_gateway.client import CarouselClient

    async def run() -> None:
        async with CarouselClient(url, token=token, reconnect=False) as client:
            submission = demo_job(client.machines, lines, workstation, machine, seed)
            accepted = await client.submit_job(submission)
        from rich.console import Console

        from carousel_gateway.cli_views import job_detail

        typer.echo(f"job {accepted.job.job_id} queued at {workstation}")
        Console().print(job_detail(accepted.job))

    _run_client(run)


_DEMO_ITEMS = (
    ("TORN-M6", "Tornillo M6 x 20"),
    ("TUER-M6", "Tuerca M6"),
    ("ARAN-6", "Arandela 6 mm"),
    ("BRID-40", "Brida 40 mm"),
    ("JUNT-12", "Junta tórica 12 mm"),
    ("FUSI-10", "Fusible 10 A"),
    ("RODA-608", "Rodamiento 608"),
    ("CABL-15", "Cable 1,5 mm² (m)"),
)


def demo_job(
    machines: list[MachineInfo],
    lines: int,
    workstation: str,
    only: list[str] | None,
    seed: int | None,
) -> JobSubmission:
    """A random job over the given carousels' buckets (``MachineInfo`` from ``welcome``)."""
    import random

    from carousel_gateway.client import CarouselError
    from carousel_gateway.wire import JobLineIn, JobSubmission

    pool = [m for m in machines if only is None or m.id in only]
    if not pool:
        raise CarouselError(f"no carousel to pick from (asked for {', '.join(only or [])})")
    rng = random.Random(seed)  # nosec B311: a demo's random picks, not a secret
    job_id = f"demo-{rng.getrandbits(32):08x}" if seed is not None else _fresh_id(rng)
    picks = []
    for number in range(1, lines + 1):
        carousel = rng.choice(pool)
        sku, description = rng.choice(_DEMO_ITEMS)
        picks.append(
            JobLineIn(
                line_id=str(number),
                machine_id=carousel.id,
                position=rng.randrange(carousel.positions) + carousel.position_base,
                quantity=rng.randint(1, 4),
                sku=sku,
                description=description,
                order_id=f"PED-{rng.randint(1000, 9999)}",
            )
        )
    return JobSubmission(job_id=job_id, workstation_id=workstation, lines=picks)


def _fresh_id(rng: random.Random) -> str:
    """A demo job id that does not repeat an earlier run's (same id, other lines: a
    conflict)."""
    import time

    return f"demo-{time.strftime('%H%M%S')}-{rng.getrandbits(16):04x}"


@app.command()
def asyncapi(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file")] = None,
) -> None:
    """Print the AsyncAPI 3.0 document of the WebSocket API (generated from the models)."""
    import json

    from carousel_gateway.api.asyncapi import build_asyncapi

    text = json.dumps(build_asyncapi(), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
