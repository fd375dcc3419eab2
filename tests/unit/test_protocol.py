"""Unit tests for carousel_gateway.plc.protocol (port-3200 framing)."""

from __future__ import annotations

import struct
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carousel_gateway.plc.protocol import (
    DEFAULT_LAYOUT,
    WORD_LAYOUT,
    Command,
    ProtocolError,
    ReplyLayout,
    ReplyLengthError,
    Request,
    RequestParser,
    decode_reply,
    encode_move_request,
    encode_raw_request,
    encode_reply,
    encode_status_request,
)
from carousel_gateway.plc.status import StatusWord

BYTES = st.integers(min_value=0, max_value=255)


# -- requests ------------------------------------------------------------------------------


def test_command_bytes() -> None:
    assert Command.STATUS == 0x00
    assert Command.MOVE == 0x01


def test_encode_status_request_is_one_zero_byte() -> None:
    assert encode_status_request() == b"\x00"


@pytest.mark.parametrize(
    ("index", "expected"),
    [(0, b"\x01\x00"), (1, b"\x01\x01"), (29, b"\x01\x1d"), (255, b"\x01\xff")],
)
def test_encode_move_request(index: int, expected: bytes) -> None:
    assert encode_move_request(index) == expected


@given(BYTES)
def test_encode_move_request_any_byte(index: int) -> None:
    assert encode_move_request(index) == bytes([0x01, index])


@pytest.mark.parametrize("index", [-1, 256, 1000])
def test_encode_move_request_out_of_range_raises(index: int) -> None:
    with pytest.raises(ProtocolError):
        encode_move_request(index)


@pytest.mark.parametrize("index", [True, False, 1.0, "1", b"\x01", [1]])
def test_encode_move_request_bool_or_non_int_raises(index: object) -> None:
    with pytest.raises(ProtocolError):
        encode_move_request(index)  # type: ignore[arg-type]


def test_encode_move_request_none_raises_instead_of_a_truncated_move() -> None:
    """A MOVE without an index must not become the single byte 0x01.

    Sent alone, 0x01 would make the PLC take the next request's first byte (0x00 for the
    next STATUS poll) as the index: an unintended MOVE to index 0.
    """
    with pytest.raises(ProtocolError):
        encode_move_request(None)  # type: ignore[arg-type]


def test_encode_raw_request() -> None:
    assert encode_raw_request(0x07) == b"\x07"
    assert encode_raw_request(0x07, 0x2A) == b"\x07\x2a"
    with pytest.raises(ProtocolError):
        encode_raw_request(256)
    with pytest.raises(ProtocolError):
        encode_raw_request(2, -1)


def test_protocol_error_is_a_value_error() -> None:
    assert issubclass(ProtocolError, ValueError)
    assert issubclass(ReplyLengthError, ProtocolError)


# -- replies -------------------------------------------------------------------------------


def test_default_layout_is_two_bytes_status_then_position() -> None:
    assert (DEFAULT_LAYOUT.reply_length, DEFAULT_LAYOUT.status_offset) == (2, 0)
    assert DEFAULT_LAYOUT.position_offset == 1


def test_decode_reply_default_layout() -> None:
    reply = decode_reply(bytes([151, 12]))
    assert reply.status == StatusWord(151)
    assert reply.status.raw == 151
    assert reply.position_index == 12


def test_word_layout_constants() -> None:
    assert (WORD_LAYOUT.reply_length, WORD_LAYOUT.status_offset) == (200, 0)
    assert WORD_LAYOUT.position_offset == 2


def test_decode_reply_word_layout_little_endian_words() -> None:
    words = [0] * 100
    words[0] = 23  # status word
    words[1] = 17  # position word (byte 2)
    words[2:] = [0xBEEF] * 98  # unrelated words must not matter
    data = struct.pack("<100H", *words)
    assert len(data) == 200
    reply = decode_reply(data, WORD_LAYOUT)
    assert reply.status.raw == 23
    assert reply.position_index == 17


def test_encode_reply_word_layout_bytes() -> None:
    data = encode_reply(21, 29, WORD_LAYOUT)
    assert len(data) == 200
    words = struct.unpack("<100H", data)
    assert words[0] == 21
    assert words[1] == 29
    assert set(words[2:]) == {0}


def test_encode_reply_default_layout_bytes() -> None:
    assert encode_reply(21, 7) == b"\x15\x07"


@pytest.mark.parametrize("length", [0, 1, 3, 200])
def test_decode_reply_wrong_length_default_layout(length: int) -> None:
    with pytest.raises(ReplyLengthError):
        decode_reply(bytes(length))


@pytest.mark.parametrize("length", [0, 2, 199, 201, 400])
def test_decode_reply_wrong_length_word_layout(length: int) -> None:
    with pytest.raises(ReplyLengthError):
        decode_reply(bytes(length), WORD_LAYOUT)


def test_reply_length_error_is_caught_as_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_reply(b"\x15")


@pytest.mark.parametrize(("status", "position"), [(256, 0), (0, 256), (-1, 0), (True, 0)])
def test_encode_reply_rejects_non_bytes(status: int, position: int) -> None:
    with pytest.raises(ProtocolError):
        encode_reply(status, position)


@pytest.mark.parametrize(
    ("length", "status_offset", "position_offset"),
    [
        (0, 0, 1),  # length below 1
        (4097, 0, 1),  # length above 4096
        (2, -1, 1),  # negative offset
        (2, 0, -1),
        (2, 2, 1),  # offset past the end
        (2, 0, 2),
        (200, 0, 200),
        (2, 0, 0),  # same offset twice
        (200, 2, 2),
        (1, 0, 0),  # a one-byte reply cannot hold both values
    ],
)
def test_reply_layout_rejects_bad_offsets(
    length: int, status_offset: int, position_offset: int
) -> None:
    with pytest.raises(ProtocolError):
        ReplyLayout(length, status_offset, position_offset)


def test_reply_layout_accepts_good_offsets() -> None:
    layout = ReplyLayout(4096, 4095, 0)
    assert (layout.reply_length, layout.status_offset, layout.position_offset) == (4096, 4095, 0)


@st.composite
def layouts(draw: st.DrawFn) -> ReplyLayout:
    length = draw(st.integers(min_value=2, max_value=300))
    status_offset = draw(st.integers(min_value=0, max_value=length - 1))
    position_offset = draw(
        st.integers(min_value=0, max_value=length - 1).filter(lambda o: o != status_offset)
    )
    return ReplyLayout(length, status_offset, position_offset)


@given(BYTES, BYTES, st.one_of(layouts(), st.sampled_from([DEFAULT_LAYOUT, WORD_LAYOUT])))
def test_encode_decode_reply_round_trip(status: int, position: int, layout: ReplyLayout) -> None:
    data = encode_reply(status, position, layout)
    assert len(data) == layout.reply_length
    assert data[layout.status_offset] == status
    assert data[layout.position_offset] == position
    reply = decode_reply(data, layout)
    assert reply.status.raw == status
    assert reply.position_index == position


# -- the PLC side: request parser ----------------------------------------------------------

REQUESTS = st.one_of(
    st.just(Request(Command.STATUS)),
    BYTES.map(lambda index: Request(Command.MOVE, index)),
    st.integers(min_value=2, max_value=255).map(Request),  # unknown one-byte commands
)


def _encode(request: Request) -> bytes:
    return encode_raw_request(request.command, request.argument)


def test_parser_single_requests() -> None:
    parser = RequestParser()
    assert parser.feed(b"\x00") == [Request(0)]
    assert parser.feed(b"\x01\x05") == [Request(1, 5)]
    assert parser.feed(b"\x09") == [Request(9)]


def test_parser_move_split_across_two_feeds() -> None:
    parser = RequestParser()
    assert parser.feed(b"\x01") == []
    assert parser.feed(b"\x00") == [Request(1, 0)]  # 0x00 here is the index, not STATUS


def test_parser_several_requests_in_one_feed() -> None:
    parser = RequestParser()
    assert parser.feed(b"\x00\x01\x1d\x00\x01\x01") == [
        Request(0),
        Request(1, 29),
        Request(0),
        Request(1, 1),
    ]


def test_parser_empty_feed() -> None:
    assert RequestParser().feed(b"") == []


@given(st.lists(REQUESTS, max_size=30))
def test_parser_every_split_point(requests: list[Request]) -> None:
    stream = b"".join(_encode(r) for r in requests)
    for cut in range(len(stream) + 1):
        parser = RequestParser()
        parsed = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert parsed == requests


@given(st.lists(REQUESTS, max_size=30), st.data())
def test_parser_random_chunking(requests: list[Request], data: st.DataObject) -> None:
    stream = b"".join(_encode(r) for r in requests)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20)))
    bounds = [0, *cuts, len(stream)]
    parser = RequestParser()
    parsed: list[Request] = []
    for start, end in pairwise(bounds):
        parsed += parser.feed(stream[start:end])
    assert parsed == requests


@given(st.lists(REQUESTS, min_size=1, max_size=30))
def test_parser_byte_by_byte(requests: list[Request]) -> None:
    stream = b"".join(_encode(r) for r in requests)
    parser = RequestParser()
    parsed: list[Request] = []
    for byte in stream:
        parsed += parser.feed(bytes([byte]))
    assert parsed == requests
