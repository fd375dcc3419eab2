"""Port-3200 framing: encode requests, decode replies. Pure logic, no I/O.

The PLC protocol has no header, length or checksum: one request, then one reply of a fixed
size. STATUS is ``0x00``; MOVE is ``[0x01, index]`` (0-based bucket index). The reply layout
varies between PLC programs, so it is a per-machine :class:`ReplyLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from carousel_gateway.plc.status import StatusWord

__all__ = [
    "DEFAULT_LAYOUT",
    "WORD_LAYOUT",
    "Command",
    "ProtocolError",
    "Reply",
    "ReplyLayout",
    "ReplyLengthError",
    "Request",
    "RequestParser",
    "decode_reply",
    "encode_move_request",
    "encode_raw_request",
    "encode_reply",
    "encode_status_request",
]


class Command(IntEnum):
    """Command bytes known to the PLC program."""

    STATUS = 0x00
    MOVE = 0x01


class ProtocolError(ValueError):
    """Malformed request arguments or reply bytes."""


class ReplyLengthError(ProtocolError):
    """A reply with the wrong number of bytes."""


@dataclass(frozen=True, slots=True)
class ReplyLayout:
    """Where the status and position bytes sit in a reply.

    The documented layout is two bytes ``[status, position]`` (2/0/1). Some PLC programs answer
    with 100 little-endian 16-bit words instead (200/0/2): reading the low byte of each word
    is exact because both values fit in one byte.
    """

    reply_length: int = 2
    status_offset: int = 0
    position_offset: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.reply_length <= 4096:
            raise ProtocolError(f"reply_length must be in 1..4096, got {self.reply_length}")
        for name in ("status_offset", "position_offset"):
            offset = getattr(self, name)
            if not 0 <= offset < self.reply_length:
                raise ProtocolError(f"{name} must be in 0..{self.reply_length - 1}, got {offset}")
        if self.status_offset == self.position_offset:
            raise ProtocolError("status_offset and position_offset must differ")


DEFAULT_LAYOUT = ReplyLayout()
WORD_LAYOUT = ReplyLayout(reply_length=200, status_offset=0, position_offset=2)


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply: the status word and the 0-based position index."""

    status: StatusWord
    position_index: int


def encode_status_request() -> bytes:
    return bytes((Command.STATUS,))


def encode_move_request(index: int) -> bytes:
    """MOVE to a 0-based bucket index, in one two-byte write (never a lone MOVE byte: the
    PLC would take the next request's byte as the index)."""
    _check_byte("index", index)
    return encode_raw_request(Command.MOVE, index)


def encode_raw_request(command: int, argument: int | None = None) -> bytes:
    """Any command byte with an optional one-byte argument.

    Only for command bytes a machine's config explicitly allows; the PLC knows STATUS and MOVE.
    """
    _check_byte("command", command)
    if argument is None:
        if command == Command.MOVE:
            raise ProtocolError("a MOVE needs its index byte")
        return bytes((command,))
    _check_byte("argument", argument)
    return bytes((command, argument))


def decode_reply(data: bytes, layout: ReplyLayout = DEFAULT_LAYOUT) -> Reply:
    """Decode exactly one reply; anything but ``layout.reply_length`` bytes is an error."""
    if len(data) != layout.reply_length:
        raise ReplyLengthError(f"reply has {len(data)} bytes, expected {layout.reply_length}")
    return Reply(
        status=StatusWord.of(data[layout.status_offset]),
        position_index=data[layout.position_offset],
    )


def encode_reply(status: int, position_index: int, layout: ReplyLayout = DEFAULT_LAYOUT) -> bytes:
    """Build a reply as a PLC would (used by the simulator; words are little-endian)."""
    _check_byte("status", status)
    _check_byte("position_index", position_index)
    buffer = bytearray(layout.reply_length)
    buffer[layout.status_offset] = status
    buffer[layout.position_offset] = position_index
    return bytes(buffer)


def _check_byte(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ProtocolError(f"{name} must be an int in 0..255, got {value!r}")


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the PLC side parses it from the byte stream."""

    command: int
    argument: int | None = None


class RequestParser:
    """Splits the PLC's incoming byte stream into requests (the PLC side of the protocol).

    STATUS is one byte, MOVE two; any other command byte is taken as a one-byte request the
    PLC program does not know. A MOVE split across TCP segments is reassembled.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Request]:
        self._buffer.extend(data)
        requests: list[Request] = []
        while self._buffer:
            command = self._buffer[0]
            if command == Command.MOVE:
                if len(self._buffer) < 2:
                    break
                requests.append(Request(command, self._buffer[1]))
                del self._buffer[:2]
            else:
                requests.append(Request(command))
                del self._buffer[:1]
        return requests
