"""The OPC UA server: every carousel as a ``CarouselType`` object under ``Objects/Machines``.

asyncua on the gateway's own event loop (or in a process of its own: ``process.py``).
Values follow the fleet's bus (the events the WebSocket broadcasts come from), written only
when they change, with the PLC reading's time as SourceTimestamp. ``MoveTo`` goes through
the one command path (``CommandRunner.run``, through the backend), and answers with a
StatusCode; it never raises one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Node, Server, ua
from asyncua.common.structures104 import new_enum
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

from carousel_gateway.api.opcua.asyncua_internals import (
    bound_port,
    clamp_publishing_interval,
    set_endpoint_urls,
)
from carousel_gateway.api.opcua.backend import Backend
from carousel_gateway.api.opcua.certificates import ClientTrust, Pki, ensure_server_certificate
from carousel_gateway.api.opcua.model import (
    CAROUSEL_VARIABLES,
    NAMESPACE_URI,
    MachineValues,
    MoveState,
    Update,
    VariableSpec,
    node_id,
)
from carousel_gateway.api.opcua.passwords import verify_password
from carousel_gateway.api.opcua.permissions import CALLER, GatewayRuleset, GatewayUser
from carousel_gateway.api.opcua.results import describe_error, status_for
from carousel_gateway.config import WILDCARD_HOSTS, OpcUaConfig, OpcUaUserConfig
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import Event

__all__ = ["GatewayUsers", "OpcUaServer", "quiet_asyncua_logs"]

log = logging.getLogger(__name__)

_POLICIES = {
    "Basic256Sha256": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    "Aes256Sha256RsaPss": ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
}

_VARIANTS: dict[str, ua.VariantType] = {
    "Int32": ua.VariantType.Int32,
    "Byte": ua.VariantType.Byte,
    "Boolean": ua.VariantType.Boolean,
    "String": ua.VariantType.String,
    "StatusCode": ua.VariantType.StatusCode,
    "UInt32": ua.VariantType.UInt32,
    "Double": ua.VariantType.Double,
    "MoveState": ua.VariantType.Int32,
}

_INITIAL: dict[str, Any] = {
    "Int32": 0,
    "Byte": 0,
    "Boolean": False,
    "String": "",
    "StatusCode": ua.StatusCode(ua.StatusCodes.Good),
    "UInt32": 0,
    "Double": 0.0,
    "MoveState": int(MoveState.IDLE),
}


def quiet_asyncua_logs() -> None:
    """asyncua logs every request at INFO and each refused client with a traceback; the
    gateway's own log says what matters (refused certificates, the listening address)."""
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    for noisy in (
        "asyncua.server.uaprocessor",  # "sending service fault response" for each refusal
        "asyncua.crypto.truststore",  # a traceback for each untrusted certificate
        "asyncua.server.binary_server_asyncio",
        "asyncua.server.address_space",
        "asyncua.crypto.uacrypto",  # the certificate's host name, at each start
        "asyncua.server.server",  # a traceback for a port in use (BindError says it in a line)
    ):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


class GatewayUsers(UserManager):  # type: ignore[misc]
    """Users of ``[[opcua.users]]``: a name and password give a viewer or an operator.

    No session is activated on a channel without a client certificate (security policy
    None) unless ``allow_none_endpoint``: asyncua would otherwise accept such a channel even
    when it offers no None endpoint. A password checked once is remembered as an HMAC
    for this process, so reconnecting costs no new scrypt on the event loop.
    """

    def __init__(self, users: Sequence[OpcUaUserConfig], *, allow_unsecured: bool) -> None:
        self._users = {user.name: user for user in users}
        self._allow_unsecured = allow_unsecured
        self._key = hashlib.sha256(repr(sorted(self._users)).encode()).digest()
        self._checked: dict[str, bytes] = {}

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if certificate is None and not self._allow_unsecured:
            return None
        user = self._users.get(username or "")
        if user is None or password is None:
            return None
        if not self._password_ok(user, password):
            log.warning("OPC UA: wrong password for user %r", username)
            return None
        return GatewayUser(role=UserRole.User, name=user.name, gateway_role=user.role)

    def _password_ok(self, user: OpcUaUserConfig, password: str) -> bool:
        mac = hmac.new(self._key, f"{user.password_hash}\0{password}".encode(), "sha256")
        seen = self._checked.get(user.name)
        if seen is not None and hmac.compare_digest(seen, mac.digest()):
            return True
        if verify_password(password, user.password_hash):
            self._checked[user.name] = mac.digest()
            return True
        return False


class OpcUaServer:
    """The north interface for SCADA and HMIs; never a second path to the machines."""

    def __init__(self, config: OpcUaConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend
        self.machines = {view.config.id: view for view in backend.machines()}
        self.pki = Pki(Path(config.pki_dir))
        self.server: Server | None = None
        self.port = config.port
        self.url = ""
        self._values = {key: MachineValues(view.config) for key, view in self.machines.items()}
        self._nodes: dict[str, ua.NodeId] = {}
        self._queue: asyncio.Queue[tuple[str, list[Update]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None
        self._namespace = 0

    # -- start and stop ---------------------------------------------------------------------

    async def start(self) -> None:
        """Build the address space and listen (before the fleet polls: asyncua's init
        stalls the loop for a while, and nothing is waiting on the loop yet)."""
        config = self.config
        quiet_asyncua_logs()
        await asyncio.to_thread(
            ensure_server_certificate, self.pki, config.application_uri, config.host
        )
        server = Server(
            user_manager=GatewayUsers(config.users, allow_unsecured=config.allow_none_endpoint)
        )
        await server.init()
        server.set_server_name("carousel-gateway")
        server.manufacturer_name = "carousel-gateway"
        server.product_uri = "urn:carousel-gateway"
        server.application_type = ua.ApplicationType.Server
        await server.set_application_uri(config.application_uri)
        await server.load_certificate(str(self.pki.certificate))
        await server.load_private_key(str(self.pki.private_key))
        policies = [_POLICIES[name] for name in config.security_policies]
        if config.allow_none_endpoint:
            policies.insert(0, ua.SecurityPolicyType.NoSecurity)
        server.set_security_policy(policies, permission_ruleset=GatewayRuleset())
        server.set_identity_tokens([ua.UserNameIdentityToken])
        server.set_certificate_validator(ClientTrust(self.pki))
        server.iserver.max_connections = config.max_sessions
        clamp_publishing_interval(server, config.min_publishing_interval_ms)
        advertised = socket.gethostname() if config.host in WILDCARD_HOSTS else config.host
        server.socket_address = (config.host, config.port)
        server.set_endpoint(f"opc.tcp://{advertised}:{config.port}/")
        self.server = server
        await self._build(server)
        await server.start()
        self.port = bound_port(server)
        self.url = f"opc.tcp://{advertised}:{self.port}/"
        if config.port == 0:
            set_endpoint_urls(server, self.url)
        counters = await self.backend.counters()
        now = time.time()
        for machine_id, view in self.machines.items():
            updates = self._values[machine_id].initial(
                view.snapshot, view.telemetry_source, counters.get(machine_id), now=now
            )
            await self._write(machine_id, updates)
        self._unsubscribe = self.backend.subscribe(self._on_event)
        self._writer = asyncio.create_task(self._write_forever(), name="opcua-writer")
        log.info("OPC UA server on %s", self.url)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()

    # -- the address space ------------------------------------------------------------------

    async def _build(self, server: Server) -> None:
        idx = self._namespace = await server.register_namespace(NAMESPACE_URI)
        move_state = await new_enum(
            server, idx, "MoveStateEnumeration", [state.name.title() for state in MoveState]
        )
        carousel = await server.nodes.base_object_type.add_object_type(idx, "CarouselType")
        folders: dict[str, Node] = {}
        for spec in CAROUSEL_VARIABLES:
            parent = carousel
            if spec.folder is not None:
                if spec.folder not in folders:
                    folder = await carousel.add_object(idx, spec.folder)
                    await folder.set_modelling_rule(True)
                    folders[spec.folder] = folder
                parent = folders[spec.folder]
            variable = await parent.add_variable(
                idx,
                spec.browse_name,
                _INITIAL[spec.kind],
                _VARIANTS[spec.kind],
                datatype=move_state.nodeid if spec.kind == "MoveState" else None,
            )
            await variable.write_attribute(
                ua.AttributeIds.Description,
                ua.DataValue(ua.Variant(ua.LocalizedText(spec.description))),
            )
            await variable.set_modelling_rule(True)
        target = ua.Argument(
            Name="Target",
            DataType=ua.NodeId(ua.ObjectIds.Int32),
            ValueRank=-1,
            Description=ua.LocalizedText("The position to bring to the window (API numbering)"),
        )
        outputs = [
            ua.Argument(
                Name="ResultCode",
                DataType=ua.NodeId(ua.ObjectIds.StatusCode),
                ValueRank=-1,
                Description=ua.LocalizedText("Good once the PLC took the MOVE"),
            ),
            ua.Argument(
                Name="Message",
                DataType=ua.NodeId(ua.ObjectIds.String),
                ValueRank=-1,
                Description=ua.LocalizedText("What happened: our error code and reasons"),
            ),
        ]
        method = await carousel.add_method(idx, "MoveTo", None, [target], outputs)
        await method.set_modelling_rule(True)
        machines = await server.nodes.objects.add_folder(ua.NodeId("Machines", idx), "Machines")
        for machine_id, view in self.machines.items():
            obj = await machines.add_object(
                ua.NodeId(node_id(machine_id), idx), machine_id, objecttype=carousel.nodeid
            )
            await obj.write_attribute(
                ua.AttributeIds.DisplayName,
                ua.DataValue(ua.Variant(ua.LocalizedText(view.config.name))),
            )
            for spec in CAROUSEL_VARIABLES:
                self._nodes[node_id(machine_id, spec.path)] = ua.NodeId(
                    node_id(machine_id, spec.path), idx
                )
            server.link_method(
                server.get_node(ua.NodeId(node_id(machine_id, "MoveTo"), idx)), self._move_to
            )
        self._specs = {spec.path: spec for spec in CAROUSEL_VARIABLES}

    # -- values -----------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        values = self._values.get(event.machine_id)
        if values is None:
            return
        updates = values.apply(event)
        if updates:
            self._queue.put_nowait((event.machine_id, updates))

    async def _write_forever(self) -> None:
        while True:
            machine_id, updates = await self._queue.get()
            try:
                await self._write(machine_id, updates)
            except Exception:
                log.exception("OPC UA: writing %s's values failed", machine_id)

    async def _write(self, machine_id: str, updates: list[Update]) -> None:
        server = self.server
        assert server is not None
        for update in updates:
            spec = self._specs[update.path]
            await server.write_attribute_value(
                self._nodes[node_id(machine_id, update.path)], _data_value(spec, update)
            )

    # -- MoveTo -----------------------------------------------------------------------------

    async def _move_to(self, parent: ua.NodeId, *arguments: ua.Variant) -> ua.CallMethodResult:
        """Through the one command path; the StatusCode is returned, never raised."""
        user = CALLER.get()
        machine_id = parent.Identifier if isinstance(parent.Identifier, str) else ""
        if user is None or user.gateway_role != "operator":
            return _result(ua.StatusCodes.BadUserAccessDenied, "FORBIDDEN: operators only")
        if machine_id not in self.machines:
            return _result(ua.StatusCodes.BadNodeIdUnknown, f"no machine {machine_id!r}")
        if len(arguments) != 1:
            return _result(ua.StatusCodes.BadArgumentsMissing, "MoveTo takes one Target")
        target = arguments[0].Value
        if arguments[0].VariantType is ua.VariantType.Boolean or not isinstance(target, int):
            return _result(ua.StatusCodes.BadTypeMismatch, "Target must be an Int32")
        try:
            text = await self.backend.move(machine_id, target, user.name or "opcua")
        except GatewayError as exc:
            return _result(status_for(exc.code), describe_error(exc))
        except Exception as exc:  # an unexpected failure is still answered, never raised
            log.exception("OPC UA: MoveTo on %s failed", machine_id)
            error = GatewayError(ErrorCode.INTERNAL_ERROR, str(exc) or type(exc).__name__)
            return _result(status_for(error.code), describe_error(error))
        return _result(ua.StatusCodes.Good, text)


def _result(code: int, message: str) -> ua.CallMethodResult:
    """``(ResultCode, Message)`` as outputs, the same code as the call's own StatusCode,
    and the message again as the Target argument's DiagnosticInfo."""
    status = ua.StatusCode(code)
    result = ua.CallMethodResult()
    result.StatusCode = status
    result.OutputArguments = [
        ua.Variant(status, ua.VariantType.StatusCode),
        ua.Variant(message, ua.VariantType.String),
    ]
    if not status.is_good():
        result.InputArgumentDiagnosticInfos = [ua.DiagnosticInfo(AdditionalInfo=message)]
    return result


def _data_value(spec: VariableSpec, update: Update) -> ua.DataValue:
    source = datetime.fromtimestamp(update.source_time, UTC)
    if update.status != ua.StatusCodes.Good or update.value is None:
        status = (
            update.status
            if update.status != ua.StatusCodes.Good
            else ua.StatusCodes.BadWaitingForInitialData
        )
        return ua.DataValue(
            ua.Variant(None, ua.VariantType.Null),
            StatusCode=ua.StatusCode(status),
            SourceTimestamp=source,
            ServerTimestamp=datetime.now(UTC),
        )
    value: Any = update.value
    if spec.kind == "StatusCode":
        value = ua.StatusCode(int(value))
    return ua.DataValue(
        ua.Variant(value, _VARIANTS[spec.kind]),
        SourceTimestamp=source,
        ServerTimestamp=datetime.now(UTC),
    )
