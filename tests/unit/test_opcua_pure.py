"""Unit tests for the OPC UA server's pure parts: settings, passwords, StatusCodes, the
permission ruleset, the address space's values, the certificate's checks. No sockets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from asyncua import ua
from hypothesis import given
from hypothesis import strategies as st

from carousel_gateway.api.opcua.certificates import (
    Pki,
    certificate_problem,
    ensure_server_certificate,
)
from carousel_gateway.api.opcua.model import (
    CAROUSEL_VARIABLES,
    TELEMETRY,
    MachineValues,
    MoveState,
    node_id,
)
from carousel_gateway.api.opcua.passwords import hash_password, verify_password
from carousel_gateway.api.opcua.permissions import (
    CALL_SERVICE,
    READ_SERVICES,
    allowed,
    service_of,
)
from carousel_gateway.api.opcua.results import STATUS_BY_CODE, describe_error, status_for
from carousel_gateway.config import ConfigError, MachineConfig, parse_config
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import (
    CommandAccepted,
    CommandRefused,
    ConnectionChanged,
    MoveCompleted,
    MoveFailed,
    Origin,
    Snapshot,
    StatusChanged,
    TelemetrySource,
)
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.plc.status import IDLE_READY_REMOTE

MACHINE_TABLE = {"id": "m1", "name": "Carousel", "port": 3200, "positions": 30, "description": "d"}
MACHINE = MachineConfig.model_validate(MACHINE_TABLE)
S = ua.StatusCodes


# -- settings -------------------------------------------------------------------------------


def test_opcua_is_off_by_default_and_secure() -> None:
    config = parse_config({"machines": [{"id": "m1", "name": "M"}]}).opcua
    assert not config.enabled
    assert config.port == 4840
    assert not config.allow_none_endpoint
    assert config.security_policies == ("Basic256Sha256", "Aes256Sha256RsaPss")


def test_enabled_without_users_is_refused() -> None:
    with pytest.raises(ConfigError, match="opcua: enabled needs at least one"):
        parse_config({"opcua": {"enabled": True}, "machines": [{"id": "m1", "name": "M"}]})


def test_a_clear_password_is_refused() -> None:
    users = [{"name": "op", "role": "operator", "password_hash": "secret"}]
    with pytest.raises(ConfigError, match="password_hash"):
        parse_config({"opcua": {"users": users}, "machines": [{"id": "m1", "name": "M"}]})


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ConfigError, match="security_policies"):
        parse_config(
            {"opcua": {"security_policies": ["None"]}, "machines": [{"id": "m1", "name": "M"}]}
        )


# -- passwords ------------------------------------------------------------------------------


def test_password_round_trip() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horse ", stored)
    assert hash_password("correct horse") != stored  # a fresh salt each time


@given(st.text(max_size=40))
def test_malformed_hashes_never_match_nor_raise(stored: str) -> None:
    assert not verify_password("x", stored)


# -- StatusCodes ----------------------------------------------------------------------------


def test_codes_map_to_the_issue_status_codes() -> None:
    assert status_for(ErrorCode.MACHINE_NOT_READY) == S.BadInvalidState
    assert status_for(ErrorCode.BUSY) == S.BadInvalidState
    assert status_for(ErrorCode.MACHINE_RESERVED) == S.BadInvalidState
    assert status_for(ErrorCode.CONNECTION_ERROR) == S.BadCommunicationError
    assert status_for(ErrorCode.PLC_TIMEOUT) == S.BadTimeout
    assert status_for(ErrorCode.MOVE_OUTCOME_UNKNOWN) == S.BadTimeout
    assert status_for(ErrorCode.INVALID_COMMAND) == S.BadOutOfRange
    assert status_for(ErrorCode.FORBIDDEN) == S.BadUserAccessDenied
    assert status_for("NOT_A_CODE") == S.BadUnexpectedError


def test_every_status_is_a_standard_bad_code() -> None:
    standard = {value for name, value in vars(S).items() if name.startswith("Bad")}
    for code in ErrorCode:
        status = status_for(code)
        assert status in standard, code
        assert not ua.StatusCode(status).is_good()
    assert set(STATUS_BY_CODE) <= set(ErrorCode)


def test_message_carries_code_and_reasons() -> None:
    error = GatewayError(
        ErrorCode.MACHINE_NOT_READY, "interlock", reasons=("PARADA_EMERGENCIA", "READY")
    )
    expected = "MACHINE_NOT_READY: interlock (reasons: PARADA_EMERGENCIA, READY)"
    assert describe_error(error) == expected
    plain = GatewayError(ErrorCode.BUSY, "busy")
    assert describe_error(plain) == "BUSY: busy"


# -- permissions ----------------------------------------------------------------------------


def test_viewers_read_and_subscribe_operators_also_call() -> None:
    for service in READ_SERVICES:
        assert allowed("viewer", service) and allowed("operator", service)
    assert not allowed("viewer", CALL_SERVICE)
    assert allowed("operator", CALL_SERVICE)


@pytest.mark.parametrize(
    "service",
    [
        ua.ObjectIds.WriteRequest_Encoding_DefaultBinary,
        ua.ObjectIds.AddNodesRequest_Encoding_DefaultBinary,
        ua.ObjectIds.DeleteNodesRequest_Encoding_DefaultBinary,
        ua.ObjectIds.HistoryUpdateRequest_Encoding_DefaultBinary,
    ],
)
def test_nobody_writes_or_changes_the_address_space(service: int) -> None:
    assert not allowed("operator", service)
    assert not allowed("viewer", service)


def test_nobody_without_a_session_user() -> None:
    assert not allowed(None, ua.ObjectIds.ReadRequest_Encoding_DefaultBinary)
    assert service_of(ua.NodeId(ua.ObjectIds.ReadRequest_Encoding_DefaultBinary)) == (
        ua.ObjectIds.ReadRequest_Encoding_DefaultBinary
    )
    assert service_of(ua.NodeId("x", 2)) is None


# -- the address space's values -------------------------------------------------------------


def connected(position: int, raw: int = IDLE_READY_REMOTE, at: float = 1.0) -> Snapshot:
    return Snapshot(
        "m1", ConnectionState.CONNECTED, position=position, raw_status=raw, updated_at=at
    )


def changed(snapshot: Snapshot, at: float = 2.0) -> StatusChanged:
    return StatusChanged("m1", at, snapshot=snapshot, previous=Snapshot("m1"))


def fresh() -> MachineValues:
    values = MachineValues(MACHINE)
    values.initial(connected(1), TelemetrySource.PORT3200, now=0.5)
    return values


def test_node_ids_are_stable_strings() -> None:
    assert node_id("machine_1") == "machine_1"
    assert node_id("machine_1", "Position") == "machine_1.Position"
    paths = [spec.path for spec in CAROUSEL_VARIABLES]
    assert len(paths) == len(set(paths))
    assert "EmergencyStopPressed" in paths and "Identification.Kind" in paths


def test_initial_values_describe_the_machine() -> None:
    values = MachineValues(MACHINE)
    updates = {u.path: u for u in values.initial(connected(4), TelemetrySource.MODBUS, now=9.0)}
    assert updates["Identification.Kind"].value == "Real PLC"
    assert updates["Identification.FirstPosition"].value == 1
    assert updates["Identification.LastPosition"].value == 30
    assert updates["Position"].value == 4 and updates["Position"].source_time == 1.0
    assert updates["LinkUp"].value is True
    assert updates["EmergencyStopPressed"].value is False
    assert updates["MoveState"].value == MoveState.IDLE
    assert updates["TelemetrySource"].value == "modbus"
    assert updates["Counters.MovesCompleted"].value == 0


def test_only_changed_values_with_the_reading_time() -> None:
    values = fresh()
    updates = values.apply(changed(connected(2, at=7.0)))
    assert [(u.path, u.value, u.source_time) for u in updates] == [("Position", 2, 7.0)]
    assert values.apply(changed(connected(2, at=8.0))) == []


@given(st.lists(st.tuples(st.integers(1, 30), st.integers(0, 255)), max_size=20))
def test_a_repeated_reading_changes_nothing(readings: list[tuple[int, int]]) -> None:
    values = fresh()
    for position, raw in readings:
        values.apply(changed(connected(position, raw)))
        assert values.apply(changed(connected(position, raw))) == []


def test_link_down_is_bad_communication_error_and_link_up_false() -> None:
    values = fresh()
    down = values.apply(ConnectionChanged("m1", 3.0, state=ConnectionState.ERROR, reason="x"))
    by_path = {u.path: u for u in down}
    for path in TELEMETRY:
        assert by_path[path].status == S.BadCommunicationError and by_path[path].value is None
    assert by_path["LinkUp"].value is False and by_path["LinkUp"].status == S.Good
    assert by_path["Counters.Disconnections"].value == 1
    # The snapshot that follows says the same: nothing new.
    gone = Snapshot("m1", ConnectionState.ERROR, position=1, raw_status=IDLE_READY_REMOTE)
    assert values.apply(changed(gone)) == []
    back = {u.path: u for u in values.apply(changed(connected(1, at=5.0)))}
    assert back["Position"].status == S.Good and back["Position"].source_time == 5.0
    assert back["LinkUp"].value is True


def test_a_move_goes_sent_moving_arrived() -> None:
    values = fresh()
    origin = Origin("op")
    accepted = CommandAccepted(
        "m1", 2.0, command_id=1, command=1, argument=9, result="ok", skipped=False,
        origin=origin, latency_s=0.01,
    )  # fmt: skip
    updates = {u.path: u.value for u in values.apply(accepted)}
    assert updates["TargetPosition"] == 9 and updates["MoveState"] == MoveState.SENT
    assert updates["LastResultCode"] == S.Good
    running = IDLE_READY_REMOTE | 0b10
    moving = {u.path: u.value for u in values.apply(changed(connected(3, running)))}
    assert moving["MoveState"] == MoveState.MOVING and moving["Running"] is True
    done = MoveCompleted("m1", 4.0, command_id=1, position=9, duration_s=1.5, travelled=8)
    arrived = {u.path: u.value for u in values.apply(done)}
    assert arrived["MoveState"] == MoveState.ARRIVED
    assert arrived["Counters.MovesCompleted"] == 1
    assert arrived["Counters.PositionsTravelled"] == 8
    assert arrived["Counters.SecondsInMotion"] == 1.5


def test_a_failed_move_and_a_refusal_set_the_result() -> None:
    values = fresh()
    failed = MoveFailed(
        "m1", 2.0, command_id=1, target=9, reasons=("PARADA_EMERGENCIA",), position=4,
        duration_s=0.5,
    )  # fmt: skip
    updates = {u.path: u.value for u in values.apply(failed)}
    assert updates["MoveState"] == MoveState.FAILED
    assert updates["LastResultCode"] == S.BadInvalidState
    assert "PARADA_EMERGENCIA" in str(updates["LastResultMessage"])
    refused = CommandRefused(
        "m1", 3.0, command_id=2, command=1, argument=5, code="MACHINE_RESERVED",
        message="held", reasons=(), origin=Origin("op"),
    )  # fmt: skip
    result = {u.path: u.value for u in values.apply(refused)}
    assert result["LastResultCode"] == S.BadInvalidState
    assert result["LastResultMessage"] == "MACHINE_RESERVED: held"
    # The same refusal again is a new result: it is written again.
    assert {u.path for u in values.apply(refused)} == {"LastResultCode", "LastResultMessage"}


# -- certificates ---------------------------------------------------------------------------


def test_server_certificate_is_generated_once_and_kept(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    ensure_server_certificate(pki, "urn:test:server", "127.0.0.1")
    first = pki.certificate.read_bytes()
    assert stat.S_IMODE(pki.private_key.stat().st_mode) == 0o600
    assert pki.trusted.is_dir() and pki.rejected.is_dir()
    ensure_server_certificate(pki, "urn:test:server", "127.0.0.1")
    assert pki.certificate.read_bytes() == first
    with pytest.raises(OSError, match="urn:test:other"):
        ensure_server_certificate(pki, "urn:test:other", "127.0.0.1")


def test_certificate_problem_names_the_uri(tmp_path: Path) -> None:
    from cryptography import x509

    pki = Pki(tmp_path / "pki")
    ensure_server_certificate(pki, "urn:a", "localhost")
    certificate = x509.load_der_x509_certificate(pki.certificate.read_bytes())
    assert certificate_problem(certificate, "urn:a") is None
    problem = certificate_problem(certificate, "urn:b")
    assert problem is not None and "urn:a" in problem


# -- the command that makes a user ----------------------------------------------------------


def test_opcua_user_prints_a_hash_the_config_takes() -> None:
    import tomllib

    from typer.testing import CliRunner

    from carousel_gateway.cli import app

    result = CliRunner().invoke(
        app, ["opcua", "user", "--name", "scada", "--role", "operator"], input="s3cret-pw\n" * 2
    )
    assert result.exit_code == 0, result.output
    lines = result.output[result.output.index("[[opcua.users]]") :]
    user = tomllib.loads(lines)["opcua"]["users"][0]
    assert user["name"] == "scada" and user["role"] == "operator"
    assert verify_password("s3cret-pw", user["password_hash"])
    assert "s3cret-pw" not in lines
    config = parse_config(
        {"opcua": {"enabled": True, "users": [user]}, "machines": [MACHINE_TABLE]}
    )
    assert config.opcua.users[0].name == "scada"
