"""What keeps clients in bounds, shared by the WebSocket and HTTP servers.

Bookkeeping driven by a clock (no I/O but reading this machine's own addresses): which host
names requests may address the gateway by, which browser origins may talk to it, token
buckets for message and command rates, session slots per client address, and the lockout
of an address that keeps presenting wrong tokens. Every refusal is a :class:`GatewayError`
with its own code, counted by where it happened for ``/metrics``.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import psutil

from carousel_gateway.api.auth import Authenticator, Identity
from carousel_gateway.config import WILDCARD_HOSTS, GatewayConfig, LimitsConfig, SecurityConfig
from carousel_gateway.errors import ErrorCode, GatewayError

__all__ = [
    "ADDRESS_REFRESH_S",
    "HTTP",
    "LIMIT_CODES",
    "LOCAL_NAMES",
    "PLACES",
    "WS_HANDSHAKE",
    "WS_MESSAGE",
    "AuthLockout",
    "Clock",
    "Guard",
    "HostPolicy",
    "IPAddress",
    "OriginPolicy",
    "RateLimiter",
    "SessionSlots",
    "TokenBucket",
    "machine_addresses",
]

Clock = Callable[[], float]

#: Where a refusal happened (the ``where`` label of ``carousel_refusals_total``).
WS_HANDSHAKE = "ws_handshake"
WS_MESSAGE = "ws_message"
HTTP = "http"
PLACES = (WS_HANDSHAKE, WS_MESSAGE, HTTP)

#: The codes a limit or the origin check gives (series exist from the start, at zero).
LIMIT_CODES = (
    ErrorCode.RATE_LIMITED,
    ErrorCode.MACHINE_RATE_LIMITED,
    ErrorCode.SESSION_LIMIT,
    ErrorCode.ADDRESS_SESSION_LIMIT,
    ErrorCode.AUTH_LOCKED_OUT,
    ErrorCode.ORIGIN_NOT_ALLOWED,
    ErrorCode.HOST_NOT_ALLOWED,
    ErrorCode.UNAUTHORIZED,
    ErrorCode.PAYLOAD_TOO_LARGE,
)

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


# -- hosts and origins -----------------------------------------------------------------------


def _origin_parts(origin: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of a serialized origin, or None when it is not one."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host:
        return None
    if parts.username is not None or parts.path not in ("", "/") or parts.query:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def _host_name(host_header: str | None) -> str | None:
    if not host_header:
        return None
    try:
        return urlsplit("//" + host_header.strip()).hostname
    except ValueError:
        return None


def _host_header_name(host_header: str) -> str | None:
    """The name in a ``Host`` header (``name[:port]``), lower case; None when malformed."""
    value = host_header.strip()
    if any(c in value for c in "@/?#\\ \t"):
        return None
    try:
        parts = urlsplit("//" + value)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        return None
    return (parts.hostname or "").rstrip(".") or None


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Names that always mean this machine (RFC 6761: ``*.localhost`` is loopback too).
LOCAL_NAMES = ("localhost", "*.localhost", "localhost.localdomain", "ip6-localhost")
#: A Host that is an address of no known interface re-reads the interfaces at most this
#: often (an address may change after the start: DHCP, a new interface).
ADDRESS_REFRESH_S = 10.0


def _ip(name: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return None


def machine_addresses() -> frozenset[IPAddress]:
    """Every address of this machine's network interfaces."""
    found = set()
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                ip = _ip(address.address)
                if ip is not None:
                    found.add(ip)
    return frozenset(found)


class HostPolicy:
    """Which names requests may address the gateway by: the DNS-rebinding defence.

    A page on a hostile site can point its own name at the gateway's address; the browser
    then sends that name as ``Host`` and lets the page read the replies as its own. So a
    request is answered only when its ``Host`` is a localhost name, a loopback address,
    one of this machine's addresses or its name, a configured bind host, or a listed name
    (``*.domain`` for subdomains, ``*`` for any). A request without ``Host`` names nothing
    a browser could have been tricked into, so it is not refused here.
    """

    def __init__(
        self,
        allowed: Iterable[str] = (),
        *,
        names: Iterable[str] = (),
        addresses: Callable[[], frozenset[IPAddress]] = machine_addresses,
        clock: Clock = time.monotonic,
    ) -> None:
        allowed = tuple(allowed)
        self.any = "*" in allowed
        self.names: set[str] = set()
        self.listed_addresses: set[IPAddress] = set()
        suffixes = []
        for pattern in (*LOCAL_NAMES, socket.gethostname(), *names, *allowed):
            pattern = pattern.strip().strip("[]").lower().rstrip(".")
            if pattern in ("*", ""):
                continue
            if pattern.startswith("*."):
                suffixes.append(pattern[1:])
            elif (ip := _ip(pattern)) is not None:
                self.listed_addresses.add(ip)
            else:
                self.names.add(pattern)
        self.suffixes = tuple(suffixes)
        self._addresses = addresses
        self._clock = clock
        self._own = addresses()
        self._read_at = clock()

    @classmethod
    def for_config(cls, config: GatewayConfig) -> HostPolicy:
        """The listed hosts plus the ones the gateway is configured to bind."""
        binds = {config.http.host, config.websocket.host} - WILDCARD_HOSTS
        return cls(config.http.allowed_hosts, names=binds)

    def allows(self, host_header: str | None) -> bool:
        if self.any or not host_header:
            return True
        name = _host_header_name(host_header)
        if name is None:
            return False
        if name in self.names or name.endswith(self.suffixes):
            return True
        ip = _ip(name)
        if ip is None:
            return False
        if ip.is_loopback or ip in self.listed_addresses or ip in self._own:
            return True
        if self._clock() - self._read_at >= ADDRESS_REFRESH_S:
            self._own = self._addresses()
            self._read_at = self._clock()
            return ip in self._own
        return False


class OriginPolicy:
    """Which browser pages may use the gateway (cross-site WebSocket hijacking defence).

    A request without ``Origin`` (a script, the WMS, curl) is not a browser page and is
    allowed. A page is allowed when its origin is listed, or when it is the gateway's own:
    the same host name the request was addressed to (its ``Host``), on one of the gateway's
    ports (the HTTP port, where the dashboard comes from, or the WebSocket port), with the
    scheme the gateway serves (``https`` with TLS, else ``http``).
    """

    def __init__(self, allowed: Iterable[str] = (), *, tls: bool = False) -> None:
        allowed = tuple(allowed)
        self.any = "*" in allowed
        self.null = "null" in allowed
        self.allowed = {
            p for p in (_origin_parts(o) for o in allowed if o not in ("*", "null")) if p
        }
        self.scheme = "https" if tls else "http"
        #: The gateway's own bound ports; the servers add theirs once listening.
        self.ports: set[int] = set()

    def allows(self, origin: str | None, host_header: str | None) -> bool:
        if origin is None or self.any:
            return True
        if origin.strip() == "null":
            return self.null
        parts = _origin_parts(origin)
        if parts is None:
            return False
        if parts in self.allowed:
            return True
        scheme, host, port = parts
        return scheme == self.scheme and host == _host_name(host_header) and port in self.ports

    def is_listed(self, origin: str) -> bool:
        """True for an origin allowed by the list (not merely as the gateway's own page)."""
        if self.any:
            return True
        parts = _origin_parts(origin)
        return parts is not None and parts in self.allowed


# -- rates -----------------------------------------------------------------------------------


class TokenBucket:
    """``rate`` events a second on average, ``burst`` at once."""

    __slots__ = ("_at", "_clock", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def acquire(self) -> float:
        """Take one: 0 when allowed, else the seconds until one would be."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate if self.rate > 0 else math.inf


class RateLimiter:
    """A token bucket per key (client, machine): ``rate`` a second on average, ``burst``
    at once. Memory stays bounded: full buckets are forgotten once there are many keys."""

    MAX_CLIENTS = 10_000

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, client: str) -> float:
        """Take one request: 0 when allowed, else the seconds until one would be."""
        now = self._clock()
        tokens, at = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            self._forget_idle(now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate if self.rate > 0 else math.inf

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget_idle(self, now: float) -> None:
        """Drop full buckets once there are many clients (they would start full anyway)."""
        if len(self._buckets) <= self.MAX_CLIENTS:
            return
        refill = self.burst / self.rate if self.rate > 0 else math.inf
        self._buckets = {c: b for c, b in self._buckets.items() if now - b[1] < refill}


# -- sessions --------------------------------------------------------------------------------


class SessionSlots:
    """Open sessions (and handshakes on their way to being one), in all and per address."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self.by_address: Counter[str] = Counter()
        self.count = 0

    def refusal(self, address: str) -> ErrorCode | None:
        """The code that refuses one more session from ``address``, or None."""
        if self.count >= self.total:
            return ErrorCode.SESSION_LIMIT
        if self.by_address[address] >= self.per_address:
            return ErrorCode.ADDRESS_SESSION_LIMIT
        return None

    def take(self, address: str) -> None:
        self.count += 1
        self.by_address[address] += 1

    def release(self, address: str) -> None:
        self.count -= 1
        left = self.by_address[address] - 1
        if left > 0:
            self.by_address[address] = left
        else:
            del self.by_address[address]


# -- lockout ---------------------------------------------------------------------------------


class AuthLockout:
    """Locks out an address after ``failures`` wrong tokens within ``window_s``.

    Only wrong tokens count (a missing token is a page that has not been given one yet, not
    a guess). While locked out, every request from the address that needs a token is
    refused, right or wrong, so guessing stops paying. Memory is bounded.
    """

    MAX_ADDRESSES = 10_000

    def __init__(
        self, failures: int, window_s: float, lockout_s: float, clock: Clock = time.monotonic
    ) -> None:
        self.failures = failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}
        self.lockouts = 0

    def remaining(self, address: str) -> float:
        """Seconds ``address`` stays locked out (0: not locked out)."""
        until = self._until.get(address)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._until[address]
            return 0.0
        return left

    def failed(self, address: str) -> bool:
        """Count a wrong token; True when it locks the address out."""
        now = self._clock()
        recent = self._recent.get(address)
        if recent is None:
            if len(self._recent) >= self.MAX_ADDRESSES:
                self._prune(now)
            recent = self._recent[address] = deque(maxlen=self.failures)
        while recent and now - recent[0] > self.window_s:
            recent.popleft()
        recent.append(now)
        if len(recent) < self.failures:
            return False
        del self._recent[address]
        if len(self._until) >= self.MAX_ADDRESSES:
            self._until = {a: u for a, u in self._until.items() if u > now}
        self._until[address] = now + self.lockout_s
        self.lockouts += 1
        return True

    def succeeded(self, address: str) -> None:
        self._recent.pop(address, None)

    @property
    def locked_out(self) -> int:
        """Addresses locked out now."""
        now = self._clock()
        return sum(1 for until in self._until.values() if until > now)

    def _prune(self, now: float) -> None:
        self._recent = {a: r for a, r in self._recent.items() if r and now - r[-1] <= self.window_s}
        while len(self._recent) >= self.MAX_ADDRESSES:  # still full: forget the oldest
            self._recent.pop(next(iter(self._recent)))


# -- the guard -------------------------------------------------------------------------------


class Guard:
    """The limits of one gateway, shared by its WebSocket and HTTP servers."""

    def __init__(
        self,
        limits: LimitsConfig | None = None,
        security: SecurityConfig | None = None,
        *,
        hosts: HostPolicy | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.limits = limits = limits or LimitsConfig()
        security = security or SecurityConfig()
        self.clock = clock
        #: Host names both servers answer to (default: this machine's own names).
        self.hosts = hosts or HostPolicy()
        self.origins = OriginPolicy(security.allowed_origins, tls=security.tls)
        self.sessions = SessionSlots(limits.max_sessions, limits.max_sessions_per_address)
        self.lockout = AuthLockout(
            limits.auth_failures, limits.auth_failure_window_s, limits.lockout_s, clock
        )
        self.machine_commands = RateLimiter(
            limits.commands_per_machine_per_second, limits.command_burst, clock
        )
        #: Refusals by (where, code), for /metrics.
        self.refusals: Counter[tuple[str, str]] = Counter()

    def session_bucket(self) -> TokenBucket:
        return TokenBucket(self.limits.messages_per_second, self.limits.message_burst, self.clock)

    def refuse(
        self,
        where: str,
        code: ErrorCode,
        message: str,
        *,
        machine_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> GatewayError:
        """Count a refusal and return its error (for the caller to raise or send)."""
        self.refusals[(where, code.value)] += 1
        return GatewayError(code, message, machine_id=machine_id, retry_after_s=retry_after_s)

    def check_host(self, where: str, host: str | None) -> None:
        if not self.hosts.allows(host):
            shown = host if host is None or len(host) <= 100 else host[:100] + "…"
            raise self.refuse(
                where,
                ErrorCode.HOST_NOT_ALLOWED,
                f"this gateway does not answer to host {shown!r}; "
                "list it in [http] allowed_hosts if clients really use that name",
            )

    def check_origin(self, where: str, origin: str | None, host: str | None) -> None:
        if not self.origins.allows(origin, host):
            raise self.refuse(
                where, ErrorCode.ORIGIN_NOT_ALLOWED, "this page's origin may not use the gateway"
            )

    def check_lockout(self, where: str, address: str) -> None:
        left = self.lockout.remaining(address)
        if left > 0:
            raise self.refuse(
                where,
                ErrorCode.AUTH_LOCKED_OUT,
                "too many failed authentications from this address; try again later",
                retry_after_s=left,
            )

    def auth_failed(self, where: str, address: str, *, token_given: bool) -> GatewayError:
        """The UNAUTHORIZED error to answer; a wrong token counts toward the lockout."""
        if token_given:
            self.lockout.failed(address)
        return self.refuse(where, ErrorCode.UNAUTHORIZED, "missing or invalid token")

    def admit(self, where: str, *, host: str | None, origin: str | None) -> None:
        """Whether this peer may talk to the gateway at all, the same for both APIs: the
        ``Host`` (HOST_NOT_ALLOWED), then a browser page's origin (ORIGIN_NOT_ALLOWED)."""
        self.check_host(where, host)
        self.check_origin(where, origin, host)

    def authenticate(
        self,
        where: str,
        authenticator: Authenticator,
        token: str | None,
        *,
        address: str,
        peer: str,
    ) -> Identity:
        """Who the token says the caller is, the same for both APIs: a locked-out address
        first (AUTH_LOCKED_OUT, before the token is even looked at), then the token
        (UNAUTHORIZED; a wrong one counts toward the lockout, a right one clears it)."""
        if authenticator.enabled:
            self.check_lockout(where, address)
        identity = authenticator.identify(token, peer)
        if identity is None:
            raise self.auth_failed(where, address, token_given=bool(token))
        if authenticator.enabled:
            self.lockout.succeeded(address)
        return identity

    def check_machine_command(self, where: str, machine_id: str) -> None:
        wait = self.machine_commands.acquire(machine_id)
        if wait > 0:
            raise self.refuse(
                where,
                ErrorCode.MACHINE_RATE_LIMITED,
                f"too many commands to {machine_id}; slow down",
                machine_id=machine_id,
                retry_after_s=wait,
            )
