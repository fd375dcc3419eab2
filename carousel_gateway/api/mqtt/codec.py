"""Sparkplug B payloads: our values to and from the protobuf bytes (pure, no I/O).

Only the five data types every Sparkplug implementation places alike are used: Int32 and
Boolean, String, and Int64 and DateTime (milliseconds since the epoch). Int32 travels in the
``int_value`` field (uint32) as its two's complement, Int64 and DateTime in ``long_value``
(uint64), as the specification says. A metric is named in a birth and referred to by its
alias afterwards; a metric without a value carries ``is_null``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from google.protobuf.message import DecodeError

from carousel_gateway.api.mqtt import sparkplug_b_pb2 as _pb  # generated (sparkplug_b.proto)

#: The generated message class; protoc's module is not typed, so it is Any from here on.
_PayloadMessage: Any = _pb.Payload  # type: ignore[attr-defined]

__all__ = [
    "DataType",
    "Metric",
    "MetricValue",
    "Payload",
    "PayloadError",
    "decode_payload",
    "encode_payload",
]

#: A metric's value as Python holds it (None: the metric is null).
MetricValue = int | bool | str | None


class DataType(IntEnum):
    """The Sparkplug data types this gateway uses (their numbers in the specification)."""

    INT32 = 3
    INT64 = 4
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13


class PayloadError(ValueError):
    """Bytes that are no Sparkplug B payload, or a metric whose value is not its type."""


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric: named in births, by alias elsewhere (``name`` None)."""

    name: str | None
    alias: int | None
    datatype: DataType | int
    value: MetricValue
    timestamp: int | None = None  # ms since the epoch

    def __post_init__(self) -> None:
        _check_value(self.datatype, self.value)


@dataclass(frozen=True, slots=True)
class Payload:
    """A decoded payload; ``seq`` is None on an NDEATH or a command."""

    timestamp: int | None
    seq: int | None
    metrics: tuple[Metric, ...]


_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _check_value(datatype: DataType | int, value: MetricValue) -> None:
    if value is None:
        return
    if datatype == DataType.BOOLEAN:
        ok = isinstance(value, bool)
    elif datatype == DataType.STRING:
        ok = isinstance(value, str)
    elif datatype in (DataType.INT32, DataType.INT64, DataType.DATETIME):
        low, high = _INT32 if datatype == DataType.INT32 else _INT64
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    else:
        ok = True  # a type we do not use: kept as decoded
    if not ok:
        raise PayloadError(f"value {value!r} is not a {_type_name(datatype)}")


def _type_name(datatype: DataType | int) -> str:
    try:
        return DataType(datatype).name.title()
    except ValueError:
        return f"type {int(datatype)}"


def encode_payload(metrics: Iterable[Metric], *, timestamp: int, seq: int | None = None) -> bytes:
    """The protobuf bytes of a payload (``seq`` None: none, as in an NDEATH)."""
    payload: Any = _PayloadMessage()
    payload.timestamp = timestamp
    if seq is not None:
        payload.seq = seq
    for metric in metrics:
        out = payload.metrics.add()
        if metric.name is not None:
            out.name = metric.name
        if metric.alias is not None:
            out.alias = metric.alias
        if metric.timestamp is not None:
            out.timestamp = metric.timestamp
        out.datatype = int(metric.datatype)
        _set_value(out, metric.datatype, metric.value)
    data: bytes = payload.SerializeToString()
    return data


def _set_value(out: Any, datatype: DataType | int, value: MetricValue) -> None:
    if value is None:
        out.is_null = True
    elif datatype == DataType.BOOLEAN:
        out.boolean_value = bool(value)
    elif datatype == DataType.STRING:
        out.string_value = str(value)
    elif datatype == DataType.INT32:
        out.int_value = int(value) & 0xFFFFFFFF
    elif datatype in (DataType.INT64, DataType.DATETIME):
        out.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    else:
        raise PayloadError(f"cannot encode {_type_name(datatype)}")


def decode_payload(data: bytes) -> Payload:
    """A payload from its bytes; PayloadError for bytes that are not one."""
    payload: Any = _PayloadMessage()
    try:
        payload.ParseFromString(data)
    except DecodeError as exc:
        raise PayloadError(f"not a Sparkplug B payload: {exc}") from None
    metrics = tuple(_decode_metric(metric) for metric in payload.metrics)
    return Payload(
        timestamp=payload.timestamp if payload.HasField("timestamp") else None,
        seq=payload.seq if payload.HasField("seq") else None,
        metrics=metrics,
    )


def _decode_metric(metric: Any) -> Metric:
    datatype = int(metric.datatype)
    with contextlib.suppress(ValueError):
        datatype = DataType(datatype)
    field = metric.WhichOneof("value")
    value: MetricValue
    if metric.is_null or field is None:
        value = None
    elif datatype == DataType.BOOLEAN and field == "boolean_value":
        value = bool(metric.boolean_value)
    elif datatype == DataType.STRING and field == "string_value":
        value = str(metric.string_value)
    elif datatype == DataType.INT32 and field == "int_value":
        raw = int(metric.int_value)
        value = raw - 2**32 if raw >= 2**31 else raw
    elif datatype in (DataType.INT64, DataType.DATETIME) and field == "long_value":
        raw = int(metric.long_value)
        value = raw - 2**64 if raw >= 2**63 else raw
    elif isinstance(datatype, DataType):
        raise PayloadError(f"a {_type_name(datatype)} metric carries its value in {field}")
    else:
        value = None  # a type this gateway does not use: its value is not read
    return Metric(
        name=metric.name if metric.HasField("name") else None,
        alias=metric.alias if metric.HasField("alias") else None,
        datatype=datatype,
        value=value,
        timestamp=metric.timestamp if metric.HasField("timestamp") else None,
    )
