"""The Sparkplug B codec: values round-trip, types are checked, junk is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carousel_gateway.api.mqtt import sparkplug_b_pb2
from carousel_gateway.api.mqtt.codec import (
    DataType,
    Metric,
    PayloadError,
    decode_payload,
    encode_payload,
)

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)

values = st.one_of(
    st.tuples(st.just(DataType.INT32), INT32),
    st.tuples(st.just(DataType.INT64), INT64),
    st.tuples(st.just(DataType.DATETIME), st.integers(0, 2**62)),
    st.tuples(st.just(DataType.BOOLEAN), st.booleans()),
    st.tuples(st.just(DataType.STRING), st.text()),
    st.tuples(st.sampled_from(list(DataType)), st.none()),
)


@given(
    st.lists(st.tuples(st.one_of(st.none(), st.text(min_size=1)), st.integers(0, 2**32), values)),
    st.integers(0, 2**63),
    st.one_of(st.none(), st.integers(0, 255)),
)
def test_every_value_round_trips(metrics, timestamp, seq):
    sent = [Metric(name, alias, datatype, value) for name, alias, (datatype, value) in metrics]
    payload = decode_payload(encode_payload(sent, timestamp=timestamp, seq=seq))
    assert payload.timestamp == timestamp
    assert payload.seq == seq
    assert list(payload.metrics) == sent


def test_int32_goes_in_int_value_as_twos_complement_and_int64_in_long_value():
    data = encode_payload(
        [
            Metric("a", None, DataType.INT32, -1),
            Metric("b", None, DataType.INT64, -2),
            Metric("c", None, DataType.DATETIME, 1_700_000_000_000),
            Metric("d", None, DataType.INT32, None),
        ],
        timestamp=1,
        seq=0,
    )
    raw = sparkplug_b_pb2.Payload()
    raw.ParseFromString(data)
    assert raw.metrics[0].int_value == 2**32 - 1
    assert raw.metrics[0].datatype == 3
    assert raw.metrics[1].long_value == 2**64 - 2
    assert raw.metrics[2].long_value == 1_700_000_000_000
    assert raw.metrics[3].is_null and raw.metrics[3].WhichOneof("value") is None


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (DataType.INT32, 2**31),
        (DataType.INT32, True),
        (DataType.INT32, "1"),
        (DataType.BOOLEAN, 1),
        (DataType.STRING, 3),
        (DataType.INT64, 2**63),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(datatype, value):
    with pytest.raises(PayloadError):
        Metric("x", None, datatype, value)


def test_junk_is_no_payload():
    with pytest.raises(PayloadError):
        decode_payload(b"\xff\xff\xff")


def test_a_value_in_the_wrong_field_is_refused():
    raw = sparkplug_b_pb2.Payload()
    metric = raw.metrics.add()
    metric.name = "Command/MoveTo"
    metric.datatype = DataType.INT32
    metric.string_value = "12"
    with pytest.raises(PayloadError, match="Int32"):
        decode_payload(raw.SerializeToString())


def test_an_unused_type_is_kept_without_its_value():
    raw = sparkplug_b_pb2.Payload()
    metric = raw.metrics.add()
    metric.name = "temperature"
    metric.datatype = 10  # Double
    metric.double_value = 21.5
    (decoded,) = decode_payload(raw.SerializeToString()).metrics
    assert decoded.datatype == 10 and decoded.value is None and decoded.name == "temperature"
