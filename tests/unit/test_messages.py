"""Message models: parsing never fails with anything but a coded error; encodings keep the spec."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from carousel_gateway.api.conversions import main_reason
from carousel_gateway.wire import (
    ErrorCode,
    GatewayError,
    MachineStatus,
    SendCommand,
    error_message,
    parse_client_message,
    request_id_of,
    utc_timestamp,
)

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["get_status", "send_command", "subscribe", "unsubscribe", "ping"])},
    optional={
        "machine_id": json_values,
        "command": json_values,
        "argument": json_values,
        "subscription_type": st.sampled_from(["status_updates", "all_events", "x"]) | json_values,
        "machine_ids": json_values,
        "request_id": json_values,
        "timestamp": json_values,
    },
)


@settings(max_examples=500)
@given(st.one_of(json_values, message_like))
def test_any_json_value_parses_or_gives_invalid_message_format(value):
    try:
        message = parse_client_message(json.dumps(value))
    except GatewayError as exc:
        assert exc.code is ErrorCode.INVALID_MESSAGE_FORMAT
        assert exc.message
    else:
        assert message.type == value["type"]


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_give_invalid_message_format(data):
    try:
        parse_client_message(data)
    except GatewayError as exc:
        assert exc.code is ErrorCode.INVALID_MESSAGE_FORMAT


def test_send_command_nested_and_flat_forms():
    nested = parse_client_message(
        '{"type": "send_command", "machine_id": "m", "command": {"command": 1, "argument": 25}}'
    )
    flat = parse_client_message(
        '{"type": "send_command", "machine_id": "m", "command": 1, "argument": 25}'
    )
    assert isinstance(nested, SendCommand) and isinstance(flat, SendCommand)
    assert nested.command_and_argument() == (1, 25) == flat.command_and_argument()


def test_command_values_are_not_coerced():
    message = parse_client_message(
        '{"type": "send_command", "machine_id": "m", "command": {"command": "1", "argument": "5"}}'
    )
    assert message.command_and_argument() == ("1", "5")  # left for INVALID_COMMAND


def test_request_id_is_recovered_from_invalid_messages():
    assert request_id_of('{"type": "nope", "request_id": "r-1"}') == "r-1"
    assert request_id_of("garbage") is None
    assert request_id_of('{"request_id": 5}') is None


def test_utc_timestamp_format():
    assert utc_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert utc_timestamp(1737973800.123456) == "2025-01-27T10:30:00.123Z"
    assert TIMESTAMP.match(utc_timestamp())


def test_machine_status_keeps_meaningful_nulls_and_drops_absent_extras():
    encoded = json.loads(
        MachineStatus(
            machine_id="m",
            status=None,
            position=None,
            raw_status=None,
            connection_status="disconnected",
            timestamp=utc_timestamp(0),
        ).encode()
    )
    assert encoded == {
        "type": "machine_status",
        "machine_id": "m",
        "status": None,
        "position": None,
        "raw_status": None,
        "connection_status": "disconnected",
        "timestamp": "1970-01-01T00:00:00.000Z",
    }


def test_error_message_shape_matches_spec():
    error = GatewayError(ErrorCode.MACHINE_NOT_FOUND, "Machine not found", machine_id="x")
    encoded = json.loads(error_message(error).encode())
    assert set(encoded) == {"type", "error", "code", "machine_id", "timestamp"}
    assert encoded["code"] == "MACHINE_NOT_FOUND" and encoded["type"] == "error"


def test_main_reason_prefers_fault_keys():
    assert main_reason(("READY", "PARADA_EMERGENCIA")) == "PARADA_EMERGENCIA"
    assert main_reason(("MODO_OPERACION",)) == "MODO_OPERACION"
    assert main_reason(("timeout",)) == "timeout"
    assert main_reason(()) == "unknown"


def test_history_kinds_of_the_api_are_the_journal_kinds():
    from typing import get_args

    from carousel_gateway.store import KINDS
    from carousel_gateway.wire import HistoryKind

    assert set(get_args(HistoryKind)) == set(KINDS)
