"""Configuration: pydantic models, loading TOML or legacy JSON, and the embedded default.

A bad file fails with one readable line per problem (file, field, what is wrong), so a
plant engineer can fix it without reading a traceback.
"""

from __future__ import annotations

import json
import socket
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from carousel_gateway.plc.protocol import ProtocolError, ReplyLayout

__all__ = [
    "WILDCARD_HOSTS",
    "AuthConfig",
    "ConfigError",
    "Count",
    "GatewayConfig",
    "HaConfig",
    "HttpConfig",
    "JournalConfig",
    "LimitsConfig",
    "MachineConfig",
    "MqttConfig",
    "OpcUaConfig",
    "OpcUaUserConfig",
    "PerSecond",
    "Port",
    "PortOrAuto",
    "Register",
    "ReplyLayoutConfig",
    "Seconds",
    "SecurityConfig",
    "SimulatorConfig",
    "TokenConfig",
    "WebSocketConfig",
    "WorkstationConfig",
    "default_config",
    "load_config",
    "parse_config",
]

#: A TOML array for a tuple field: strict mode would take only a Python tuple, and TOML and
#: JSON give lists; the items stay strict (``["1"]`` is still refused for integers).
AnyList = Field(strict=False)

Port = Annotated[int, Field(ge=1, le=65535)]
PortOrAuto = Annotated[int, Field(ge=0, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=3600)]
Register = Annotated[int, Field(ge=0, le=65535)]


class _Strict(BaseModel):
    """Unknown keys refused, and no type coercion: ``port = "5000"`` is a mistake in the
    file (a string where a number belongs), so it is named rather than silently accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ReplyLayoutConfig(_Strict):
    """Where the status and position bytes sit in the PLC's reply (docs/plc-protocol.md)."""

    reply_length: Annotated[int, Field(ge=2, le=4096)] = 2
    status_offset: Annotated[int, Field(ge=0)] = 0
    position_offset: Annotated[int, Field(ge=0)] = 1

    @model_validator(mode="after")
    def _check(self) -> ReplyLayoutConfig:
        try:
            self.to_layout()
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None
        return self

    def to_layout(self) -> ReplyLayout:
        return ReplyLayout(self.reply_length, self.status_offset, self.position_offset)


class SimulatorConfig(_Strict):
    """A machine of kind ``simulator``: the gateway starts it itself unless ``embedded =
    false`` (then it is a simulator run elsewhere, e.g. ``carousel-gateway simulate``,
    reached at the machine's ``host``/``port`` like a PLC)."""

    embedded: bool = True
    seconds_per_position: Seconds = 1.0
    reply_delay_s: Annotated[float, Field(ge=0, le=60)] = 0.0
    single_session: bool = True
    release_time_s: Annotated[float, Field(ge=0, le=60)] = 0.0
    #: Close a session that has sent nothing for this long, as a PLC that drops silent
    #: clients would (unknown for the field PLC: check it on site). None: never.
    idle_drop_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    start_position: Annotated[int, Field(ge=0)] | None = None
    #: Delay before each Modbus answer (the field PLC takes about 50 ms per read).
    modbus_reply_delay_s: Annotated[float, Field(ge=0, le=60)] = 0.0


class MachineConfig(_Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: PortOrAuto = 3200
    kind: Literal["plc", "simulator"] = "plc"
    description: str = ""
    positions: Annotated[int, Field(ge=2, le=256)] = 30
    position_base: Annotated[int, Field(ge=0, le=1)] = 1
    reply: ReplyLayoutConfig = ReplyLayoutConfig()
    poll_idle_s: Seconds = 1.0
    #: While a move or command is pending or the machine runs, poll back to back: the next
    #: STATUS as soon as the reply is in, at most one every ``poll_min_gap_s`` (from one
    #: request to the next). Off: wait ``poll_active_s`` after each reply instead.
    poll_back_to_back: bool = True
    poll_min_gap_s: Annotated[float, Field(ge=0, le=60)] = 0.02
    poll_active_s: Seconds = 0.2
    request_timeout_s: Seconds = 1.5
    connect_timeout_s: Seconds = 2.0
    move_timeout_s: Seconds = 120.0
    move_start_timeout_s: Seconds = 5.0
    #: Before a MOVE's interlock reading, the port-3200 link must have carried nothing for
    #: this long after its last reply: bytes a PLC sends after its reply (a trailing byte,
    #: a second copy of the reply) then arrive with no request outstanding, where they are
    #: seen for what they are, instead of being read as the interlock reading.
    stray_guard_s: Annotated[float, Field(ge=0, le=5)] = 0.05
    backoff_initial_s: Seconds = 0.25
    backoff_max_s: Seconds = 5.0
    breaker_threshold: Annotated[int, Field(ge=1, le=1000)] = 5
    breaker_cooldown_s: Seconds = 5.0
    allowed_commands: Annotated[tuple[Annotated[int, Field(ge=0, le=255)], ...], AnyList] = (
        0,
        1,
    )
    simulator: SimulatorConfig | None = None
    # -- telemetry: where status and position come from (commands always use `port`) --
    telemetry: Literal["port3200", "modbus"] = "port3200"
    modbus_port: PortOrAuto = 502
    modbus_unit: Annotated[int, Field(ge=0, le=255)] = 1
    modbus_poll_active_s: Seconds = 0.1
    modbus_poll_idle_s: Seconds = 0.5
    #: Time allowed for one complete Modbus reading (every register block).
    modbus_timeout_s: Seconds = 0.5
    #: How long Modbus may go without a good reading before port-3200 polling takes over.
    modbus_fallback_s: Seconds = 1.0
    position_register: Register = 0  # D0
    target_register: Register = 2  # D2
    status_register: Register = 1000  # D1000

    @model_validator(mode="before")
    @classmethod
    def _simulator_defaults(cls, data: Any) -> Any:
        """``kind = "simulator"`` alone means a simulator the gateway starts itself, on a
        free loopback port: a simulator that nobody starts would simulate nothing (the
        gateway would only log link errors to 127.0.0.1:3200). ``[machines.simulator]
        embedded = false`` keeps the machine pointed at a simulator run elsewhere."""
        if not isinstance(data, dict) or data.get("kind") != "simulator":
            return data
        data = dict(data)
        simulator = data.get("simulator")
        if simulator is None:
            data["simulator"] = simulator = {}
        if isinstance(simulator, SimulatorConfig):
            embedded = simulator.embedded
        elif isinstance(simulator, dict):
            embedded = simulator.get("embedded", True) is True
        else:
            return data  # not a table: the field's own validation names the mistake
        if embedded:
            data.setdefault("port", 0)
            if data.get("telemetry") == "modbus":
                data.setdefault("modbus_port", 0)
        return data

    @property
    def embedded_simulator(self) -> bool:
        return self.kind == "simulator" and self.simulator is not None and self.simulator.embedded

    @property
    def type_label(self) -> Literal["Simulator", "Real PLC"]:
        """The spec's ``type`` field."""
        return "Simulator" if self.kind == "simulator" else "Real PLC"

    @model_validator(mode="after")
    def _check(self) -> MachineConfig:
        if self.port == 0 and not self.embedded_simulator:
            raise ValueError("port 0 (pick a free port) is only valid for an embedded simulator")
        if self.telemetry == "modbus" and self.modbus_port == 0 and not self.embedded_simulator:
            raise ValueError(
                "modbus_port 0 (pick a free port) is only valid for an embedded simulator"
            )
        registers = (self.position_register, self.target_register, self.status_register)
        if len(set(registers)) != len(registers):
            raise ValueError("position_register, target_register and status_register must differ")
        if self.simulator is not None and self.kind != "simulator":
            raise ValueError("a [simulator] table needs kind = 'simulator'")
        if self.simulator is not None and self.simulator.start_position is not None:
            first = self.position_base
            last = self.positions - 1 + self.position_base
            if not first <= self.simulator.start_position <= last:
                raise ValueError(f"simulator.start_position must be in {first}..{last}")
        if not {0, 1} <= set(self.allowed_commands):
            raise ValueError("allowed_commands must include 0 (STATUS) and 1 (MOVE)")
        return self


class TokenConfig(_Strict):
    """An API token, stored as the SHA-256 hex digest of the token (never in clear)."""

    name: Annotated[str, Field(min_length=1, max_length=100)]
    role: Literal["viewer", "operator"]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class AuthConfig(_Strict):
    tokens: Annotated[tuple[TokenConfig, ...], AnyList] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)


class WebSocketConfig(_Strict):
    # Serves the plant network; set host to narrow it.
    host: str = "0.0.0.0"  # nosec B104
    port: PortOrAuto = 8765
    ping_interval_s: Seconds = 30.0
    ping_timeout_s: Seconds = 30.0
    max_message_bytes: Annotated[int, Field(ge=256, le=16 * 2**20)] = 64 * 1024
    #: A session whose unsent output passes this many bytes is disconnected.
    max_send_buffer_bytes: Annotated[int, Field(ge=4096)] = 1024 * 1024
    compression: bool = False
    #: A broadcast to more sessions than this is written in slices of this many, the event
    #: loop serving other work between slices (per-session order is kept).
    broadcast_slice_sessions: Annotated[int, Field(ge=1, le=1_000_000)] = 64
    #: Seconds to wait for a peer's closing handshake before dropping it (a dead or deaf
    #: client holds its session slot that long after being closed).
    close_timeout_s: Seconds = 5.0


#: Bind addresses that mean "every interface" (not names a client can address); only
#: compared with, never bound here.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # nosec B104


class HttpConfig(_Strict):
    # Serves the plant network; set host to narrow it.
    host: str = "0.0.0.0"  # nosec B104
    port: PortOrAuto = 5000
    #: Host names (the ``Host`` header) both ports answer to besides the defaults: localhost
    #: names, this machine's name and addresses, and the configured ``host`` of [http] and
    #: [websocket]. ``"*.example.com"`` matches its subdomains; ``"*"`` allows any host
    #: (switches the DNS-rebinding defence off). Others get 400 ``HOST_NOT_ALLOWED``.
    allowed_hosts: Annotated[tuple[str, ...], AnyList] = ()

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            name = host[2:] if host.startswith("*.") else host
            if host != "*" and (
                not name or "*" in name or any(c in name for c in "/?#@ ") or name != name.strip()
            ):
                raise ValueError(
                    f"allowed_hosts: {host!r} is not a host name, an address, '*.domain' or '*'"
                )
        return hosts


class SecurityConfig(_Strict):
    """TLS and the browser origins allowed (docs/security.md)."""

    #: PEM certificate (chain) and private key: with both, the WebSocket API serves wss://
    #: and the HTTP server https://, on the same ports.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Browser origins allowed besides the gateway's own pages ("same host": the host the
    #: request was addressed to, on the gateway's HTTP or WebSocket port). Each is
    #: ``scheme://host[:port]``; ``"*"`` allows any origin (not recommended). Requests
    #: without an Origin header (non-browser clients) are not affected.
    allowed_origins: Annotated[tuple[str, ...], AnyList] = ()

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @model_validator(mode="after")
    def _check(self) -> SecurityConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        for origin in self.allowed_origins:
            if origin in ("*", "null"):
                continue
            scheme, sep, rest = origin.partition("://")
            if (
                scheme.lower() not in ("http", "https")
                or not sep
                or not rest
                or any(c in rest for c in "/?#@ ")
            ):
                raise ValueError(
                    f"allowed_origins: {origin!r} is not an origin (scheme://host[:port])"
                )
        return self


PerSecond = Annotated[float, Field(gt=0, le=1_000_000)]
Count = Annotated[int, Field(ge=1, le=1_000_000)]


class LimitsConfig(_Strict):
    """Limits that keep one client (or one attacker) from costing anyone else."""

    #: Messages a WebSocket session may send: a sustained rate and a burst (RATE_LIMITED).
    messages_per_second: PerSecond = 20.0
    message_burst: Count = 50
    #: A session whose messages keep being refused this many times in a row is closed (1008).
    max_refused_messages: Count = 100
    #: Commands to one machine from all clients together (MACHINE_RATE_LIMITED).
    commands_per_machine_per_second: PerSecond = 2.0
    command_burst: Count = 10
    #: Open WebSocket sessions in all (SESSION_LIMIT) and from one client address
    #: (ADDRESS_SESSION_LIMIT); a handshake over either is refused with 503.
    max_sessions: Count = 1000
    max_sessions_per_address: Count = 100
    #: Seconds a client has to complete the WebSocket handshake after connecting.
    handshake_timeout_s: Seconds = 10.0
    #: Wrong tokens from one address within the window before it is locked out (every
    #: authenticated request from it refused with AUTH_LOCKED_OUT) for ``lockout_s``.
    auth_failures: Count = 10
    auth_failure_window_s: Seconds = 60.0
    lockout_s: Seconds = 300.0
    #: REST writes (POST) per client: a sustained rate and a burst (RATE_LIMITED).
    http_writes_per_second: PerSecond = 20.0
    http_write_burst: Count = 40


class JournalConfig(_Strict):
    """The SQLite journal of commands and machine events (``store.py``)."""

    enabled: bool = True
    path: str = "./carousel-gateway.db"  # ":memory:" keeps nothing across restarts
    #: A PostgreSQL database instead of the SQLite file (``postgresql://user@host/db``;
    #: several hosts with ``target_session_attrs=read-write``). The password comes from
    #: ``PGPASSWORD`` or ``~/.pgpass``, never from this file.
    url: str | None = None
    retention_days: Annotated[float, Field(gt=0, le=36500)] = 90.0

    @field_validator("url")
    @classmethod
    def _postgresql_without_password(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (or leave it out for SQLite)")
        authority = url.split("://", 1)[1].split("/", 1)[0]
        if "@" in authority and ":" in authority.rsplit("@", 1)[0]:
            raise ValueError(
                "must not hold a password: set PGPASSWORD in the environment or use ~/.pgpass"
            )
        return url


class HaConfig(_Strict):
    """Two gateways per cell (active/standby, ``carousel_gateway.ha``): a lease in the
    journal's PostgreSQL decides which one drives the carousels."""

    enabled: bool = False
    cell: str = "cell-1"  # one lease row per cell: both instances name the same cell
    #: Unique per process (the host name by default; set it when two share a host).
    instance: str = Field(default_factory=socket.gethostname, min_length=1)
    #: This instance's REST base URL and WebSocket URL, as clients reach them: a standby
    #: names the active's in every NOT_ACTIVE refusal. Both are kept in the lease row's
    #: ``advertise_url`` as JSON ``{"http": ..., "ws": ...}``.
    advertise_url: str = ""
    advertise_ws_url: str = ""
    ttl_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    renew_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    margin_s: Annotated[float, Field(gt=0, le=600)] = 0.5
    #: After a takeover, how long a PLC may still refuse this instance: the previous
    #: active's session must end (at once after a crash; after the PLC's idle drop for a
    #: frozen or cut-off one) and the PLC then refuses new sessions for its release time
    #: (~2-6 s). Meanwhile refused connections are retried every ``backoff_initial_s`` and
    #: never open the circuit breaker, which would add its cooldown to the takeover.
    takeover_connect_s: Annotated[float, Field(ge=0, le=600)] = 10.0

    @model_validator(mode="after")
    def _check(self) -> HaConfig:
        if not 0 < self.margin_s < self.ttl_s:
            raise ValueError("margin_s must be shorter than ttl_s")
        if not self.renew_s < self.ttl_s - self.margin_s:
            raise ValueError(
                "renew_s must be shorter than ttl_s - margin_s (the active would fence itself "
                "before its first renewal)"
            )
        return self


class WorkstationConfig(_Strict):
    """One picking window served by one operator, with its carousels (a pod when several)."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    machines: Annotated[tuple[str, ...], Field(min_length=1), AnyList]
    #: Jobs picked at once (more than one: batch picking, each bucket visited once for all).
    max_active_jobs: Annotated[int, Field(ge=1, le=50)] = 1


#: A Sparkplug B group or edge node id: no MQTT wildcard or separator (spec: no +, #, /).
SparkplugId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class MqttConfig(_Strict):
    """The MQTT north interface (docs/mqtt.md): a Sparkplug B 3.0 edge node, or plain JSON.

    Off by default. ``group_id`` and ``edge_node_id`` name this node on the broker; two
    gateway instances may share them (the active/standby work builds on that).
    """

    enabled: bool = False
    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Port = 1883
    #: TLS to the broker: ``ca`` (a PEM bundle to trust; alone it turns TLS on), and a
    #: client certificate and key for brokers that authenticate clients by certificate.
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    username: str | None = None
    #: The name of an environment variable holding the password (never the password).
    password_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    group_id: SparkplugId = "carousels"
    edge_node_id: SparkplugId = "gateway"
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    #: With a primary host application id, births wait for its ``spBv1.0/STATE/<id>``
    #: online message, and its offline message takes this node off the broker until it
    #: is back.
    primary_host_id: SparkplugId | None = None
    #: DCMD ``Command/MoveTo`` (or JSON ``…/command``) moves carousels only when true.
    commands_enabled: bool = False
    format: Literal["sparkplug", "json"] = "sparkplug"
    #: A PLC link down this long takes its device off the broker (DDEATH); DBIRTH follows
    #: when it is back.
    device_death_s: Annotated[float, Field(ge=0, le=3600)] = 10.0
    #: Rebirth requests (NCMD ``Node Control/Rebirth``) honoured at most once per this long.
    rebirth_min_interval_s: Annotated[float, Field(ge=0, le=3600)] = 5.0
    #: Reconnect backoff: the first wait and the longest.
    backoff_initial_s: Seconds = 0.5
    backoff_max_s: Seconds = 30.0
    #: Time allowed to connect (TCP, TLS and CONNACK) before a retry.
    connect_timeout_s: Seconds = 10.0

    @model_validator(mode="after")
    def _check(self) -> MqttConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together: give both or neither")
        if self.password_env is not None and self.username is None:
            raise ValueError("password_env needs a username")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.ca is not None or self.cert is not None


#: OPC UA security policies the server may offer, each with SignAndEncrypt only.
OpcUaPolicy = Literal["Basic256Sha256", "Aes256Sha256RsaPss"]


class OpcUaUserConfig(_Strict):
    """A user name and password for OPC UA clients, mapped to a gateway role. The password
    is stored only as a scrypt hash (``carousel-gateway opcua hash-password`` makes one)."""

    name: Annotated[str, Field(min_length=1, max_length=100)]
    role: Literal["viewer", "operator"]
    password_hash: Annotated[str, Field(pattern=r"^scrypt\$\d+\$\d+\$\d+\$[0-9a-f]+\$[0-9a-f]+$")]


class OpcUaConfig(_Strict):
    """The OPC UA server (docs/opcua.md): off unless ``enabled``; secure by default."""

    enabled: bool = False
    # Serves the plant network; set host to narrow it.
    host: str = "0.0.0.0"  # nosec B104
    port: PortOrAuto = 4840
    #: The server's ApplicationUri; the generated certificate carries it (they must match).
    application_uri: Annotated[str, Field(min_length=1, max_length=400)] = (
        "urn:carousel-gateway:opcua"
    )
    #: Folder of the server's certificate (``own/``, generated once and kept), the trusted
    #: client certificates (``trusted/``) and the refused ones (``rejected/``).
    pki_dir: Annotated[str, Field(min_length=1)] = "./opcua-pki"
    #: Offered with SignAndEncrypt; at least one.
    security_policies: Annotated[
        tuple[OpcUaPolicy, ...], Field(min_length=1), AnyList
    ] = ("Basic256Sha256", "Aes256Sha256RsaPss")
    #: The unencrypted, unsigned endpoint (policy None). Off: say ``true`` only on a
    #: network where passwords in clear are acceptable.
    allow_none_endpoint: bool = False
    users: Annotated[tuple[OpcUaUserConfig, ...], AnyList] = ()
    #: Open connections at most (a client over it is refused at connect).
    max_sessions: Count = 50
    #: Subscriptions asking for a faster publishing interval get this one (milliseconds).
    min_publishing_interval_ms: Annotated[float, Field(ge=10, le=3_600_000)] = 100.0
    #: Run the server in a process of its own (its publishing off the gateway's event loop;
    #: MOVEs still go through the gateway's command path). Off: on the gateway's loop.
    own_process: bool = False

    @model_validator(mode="after")
    def _check(self) -> OpcUaConfig:
        if len(set(self.security_policies)) != len(self.security_policies):
            raise ValueError("security_policies: a policy is listed twice")
        names = [user.name for user in self.users]
        if len(set(names)) != len(names):
            raise ValueError("users: a user name is listed twice")
        if self.enabled and not self.users:
            raise ValueError(
                "enabled needs at least one [[opcua.users]] entry (anonymous clients are refused)"
            )
        return self



class GatewayConfig(_Strict):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    websocket: WebSocketConfig = WebSocketConfig()
    http: HttpConfig = HttpConfig()
    auth: AuthConfig = AuthConfig()
    security: SecurityConfig = SecurityConfig()
    limits: LimitsConfig = LimitsConfig()
    journal: JournalConfig = JournalConfig()
    mqtt: MqttConfig = MqttConfig()
    opcua: OpcUaConfig = OpcUaConfig()
    ha: HaConfig = HaConfig()
    machines: Annotated[tuple[MachineConfig, ...], Field(min_length=1), AnyList]
    workstations: Annotated[tuple[WorkstationConfig, ...], AnyList] = ()

    @model_validator(mode="after")
    def _workstations_name_machines(self) -> GatewayConfig:
        """A workstation names machines of this gateway; a machine serves one workstation
        (its moves are reserved for that workstation's jobs)."""
        known = {machine.id for machine in self.machines}
        station_of: dict[str, str] = {}
        seen: set[str] = set()
        for station in self.workstations:
            if station.id in seen:
                raise ValueError(f"duplicate workstation id {station.id!r}")
            seen.add(station.id)
            for machine_id in station.machines:
                if machine_id not in known:
                    raise ValueError(
                        f"workstation {station.id!r} names unknown machine {machine_id!r}"
                    )
                if machine_id in station_of:
                    raise ValueError(
                        f"machine {machine_id!r} is in workstations {station_of[machine_id]!r} "
                        f"and {station.id!r}: a carousel serves one workstation"
                    )
                station_of[machine_id] = station.id
        return self

    @field_validator("machines")
    @classmethod
    def _unique_ids(cls, machines: tuple[MachineConfig, ...]) -> tuple[MachineConfig, ...]:
        seen: set[str] = set()
        for machine in machines:
            if machine.id in seen:
                raise ValueError(f"duplicate machine id {machine.id!r}")
            seen.add(machine.id)
        return machines

    @model_validator(mode="after")
    def _ha_needs_postgresql(self) -> GatewayConfig:
        if self.ha.enabled and (not self.journal.enabled or self.journal.url is None):
            raise ValueError(
                "[ha] enabled needs the journal on PostgreSQL: set [journal] url = "
                '"postgresql://..." (the lease and the fence live there)'
            )
        return self


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` has one readable line each."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def default_config() -> GatewayConfig:
    """Two simulated carousels the gateway starts itself on free loopback ports.

    ``machine_2`` reads its telemetry over Modbus TCP, so both telemetry paths run in every
    ``make run``.
    """
    simulator = {"embedded": True, "seconds_per_position": 1.0, "release_time_s": 0.0}
    return GatewayConfig.model_validate(
        {
            "machines": [
                {
                    "id": "machine_1",
                    "name": "Carrusel Principal",
                    "host": "127.0.0.1",
                    "port": 0,
                    "kind": "simulator",
                    "description": "Embedded simulator",
                    "simulator": simulator,
                },
                {
                    "id": "machine_2",
                    "name": "Carrusel Secundario",
                    "host": "127.0.0.1",
                    "port": 0,
                    "kind": "simulator",
                    "description": "Embedded simulator",
                    "simulator": simulator,
                    "telemetry": "modbus",
                    "modbus_port": 0,
                },
            ],
            # A pod of two: one operator picks from both carousels (pick jobs).
            "workstations": [
                {"id": "station_1", "name": "Puesto 1", "machines": ["machine_1", "machine_2"]}
            ],
        }
    )


def load_config(path: str | Path | None) -> GatewayConfig:
    """Load a TOML file (or a legacy JSON one); None gives the embedded default."""
    if path is None:
        return default_config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    legacy = None
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
            data = _from_legacy_json(raw, path)
            legacy = raw if data is not raw else None
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = path.suffix.lstrip(".") or "TOML"
        raise ConfigError([f"{path}: not valid {kind}: {exc}"]) from None
    if legacy is None:
        return parse_config(data, source=str(path))
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        # Name the fields as the legacy file spells them (plc_machines[0].ip, not .host).
        raise ConfigError(_describe(exc, legacy, str(path), _LEGACY_NAMES)) from None


def parse_config(data: Any, *, source: str = "<config>") -> GatewayConfig:
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, data, source)) from None


_LEGACY_NAMES = {"machines": "plc_machines", "host": "ip", "kind": "simulator"}


def _describe(
    exc: ValidationError, data: Any, source: str, names: dict[str, str] | None = None
) -> list[str]:
    errors = exc.errors()
    # An invalid machine also empties the list; "at least 1 item" would then be noise.
    if any(e["loc"][:1] == ("machines",) and len(e["loc"]) > 1 for e in errors):
        errors = [e for e in errors if not (e["loc"] == ("machines",) and e["type"] == "too_short")]
    lines = []
    for error in errors:
        loc = tuple((names or {}).get(p, p) if isinstance(p, str) else p for p in error["loc"])
        location = _location(loc, data)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] in _TYPE_NAMES:
            message = _wrong_type(error["type"], error["input"])
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        lines.append(f"{source}: {location or '(top level)'}: {message}")
    return lines


#: What a strict field wanted, in the words of the file (TOML), by pydantic's error type.
_TYPE_NAMES = {
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string (in quotes)",
    "tuple_type": "a list ([...])",
    "list_type": "a list ([...])",
    "model_type": "a table",
    "dict_type": "a table",
}


def _wrong_type(error_type: str, value: Any) -> str:
    """``must be a whole number, not the string "5000" (remove the quotes)``: strict types
    refuse what a lax parser would guess at, so the message says how to write it."""
    wanted = _TYPE_NAMES[error_type]
    if isinstance(value, str):
        shown = f"the string {json.dumps(value)}"
        unquoted = value.strip().lower()
        looks_typed = unquoted in ("true", "false") or _is_number(unquoted)
        if error_type in ("int_type", "float_type", "bool_type") and looks_typed:
            return f"must be {wanted}, not {shown} (remove the quotes)"
    elif isinstance(value, bool):
        shown = str(value).lower()
    elif isinstance(value, int | float):
        shown = f"the number {value}"
    elif isinstance(value, dict):
        shown = "a table"
    elif isinstance(value, list | tuple):
        shown = "a list"
    else:
        shown = repr(value)
    return f"must be {wanted}, not {shown}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    """``machines[1].port`` style, naming the machine id where it helps."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict):
                machine_id = node[item].get("id")
                if isinstance(machine_id, str):
                    label = f"[{item}] ({machine_id})"
            parts.append(label)
        else:
            parts.append(f".{item}" if parts else str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return "".join(parts)


_LEGACY_MACHINE_KEYS = {"id", "name", "ip", "port", "simulator", "description"}


def _from_legacy_json(data: Any, path: Path) -> dict[str, Any]:
    """Translate the ``plc_machines`` JSON of older carousel deployments."""
    if isinstance(data, dict) and "machines" in data and "plc_machines" not in data:
        return data  # already our shape, written as JSON
    if not isinstance(data, dict) or not isinstance(data.get("plc_machines"), list):
        raise ConfigError([f"{path}: a JSON config needs a 'plc_machines' list"])
    machines = []
    problems = []
    for index, entry in enumerate(data["plc_machines"]):
        if not isinstance(entry, dict):
            problems.append(f"{path}: plc_machines[{index}]: must be an object")
            continue
        unknown = sorted(set(entry) - _LEGACY_MACHINE_KEYS)
        for key in unknown:
            problems.append(f"{path}: plc_machines[{index}].{key}: unknown key")
        machine: dict[str, Any] = {
            "id": entry.get("id"),
            "name": entry.get("name", entry.get("id")),
            "host": entry.get("ip"),
            "port": entry.get("port", 3200),
            "kind": "simulator" if entry.get("simulator") else "plc",
        }
        if entry.get("simulator"):
            # Older deployments ran their simulators themselves, at ip:port.
            machine["simulator"] = {"embedded": False}
        if "description" in entry:
            machine["description"] = entry["description"]
        machines.append(machine)
    if problems:
        raise ConfigError(problems)
    return {"machines": machines}
