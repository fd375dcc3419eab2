"""The only place that touches ``websockets``' private internals.

The outbox writes one prebuilt frame straight to each session's transport (the cost of a
broadcast to many sessions is then one ``write`` each), and the handshake guard releases a
session slot when a connection is lost, whether or not it became a session. Neither has a
public API in ``websockets``, so the private attributes they need are read here and nowhere
else; ``tests/unit/test_ws_internals.py`` fails loudly when a release changes one of them.

What is used, on a ``websockets.asyncio`` connection (server or client):

- ``connection.protocol.state`` and ``connection.protocol.extensions`` (sans-I/O protocol);
- ``connection.send_in_progress`` (a fragmented send under way; absent before 16.0);
- ``connection.transport``: ``write``, ``abort``, ``get_write_buffer_size``;
- ``connection.connection_lost_waiter`` (a future done when the TCP connection is lost).

Writing straight to the transport leaves the protocol's state machine as it would be after
``protocol.send_text()`` followed by ``send_data()``: sending an unfragmented data frame
changes nothing in its state, and the asyncio connection flushes the protocol's output after
every protocol call, so nothing of its own can be waiting to go out before our bytes.
Connections that are not OPEN or are in the middle of a fragmented send are skipped, as
``websockets``' own ``broadcast()`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from typing import Any, Protocol, TypeVar

from websockets.asyncio.server import broadcast
from websockets.protocol import State

__all__ = [
    "VERIFIED_VERSIONS",
    "Connection",
    "FrameTarget",
    "abort",
    "on_connection_lost",
    "write_text_frames",
]

#: ``websockets`` releases this module was checked against (``tests/unit/test_ws_internals.py``
#: and the WebSocket integration tests with each); pyproject.toml pins the same range.
#: Older ones fail: 16.0's ``broadcast()`` has no ``text`` argument (a compressed session
#: would get binary frames) and 15.x has no ``send_in_progress``.
VERIFIED_VERSIONS = ("16.1", "16.1.1", "17.0", "17.0.1", "17.1", "17.2", "17.3", "17.4")

_OPEN = State.OPEN

#: A ``websockets.asyncio`` connection (server or client); typed loosely so stand-ins in
#: unit tests fit.
Connection = Any


class FrameTarget(Protocol):
    """Who a frame is written to: a session's connection, and whether it still counts."""

    @property
    def alive(self) -> bool: ...
    @property
    def connection(self) -> Connection: ...


_T = TypeVar("_T", bound=FrameTarget)


def write_text_frames(
    targets: Iterable[_T], frame: bytes, payload: bytes, *, skip: Container[_T], limit: int
) -> tuple[int, list[_T]]:
    """Write ``frame`` (a complete unmasked text frame carrying ``payload``) to each alive
    target not in ``skip``, without awaiting; how many were written, and those whose
    connection now buffers more than ``limit`` bytes (clients not reading).

    (Skipped, as ``websockets``' own ``broadcast()`` does: a connection not OPEN, or in
    the middle of a fragmented send. With permessage-deflate, ``payload`` goes through
    ``broadcast()``, which compresses it for that connection.) The broadcast's hot loop
    is here whole, one call per slice of sessions rather than one per session.
    """
    written = 0
    slow: list[_T] = []
    for target in targets:
        if not target.alive or target in skip:
            continue
        connection = target.connection
        protocol = connection.protocol
        if protocol.state is not _OPEN or connection.send_in_progress is not None:
            continue
        transport = connection.transport
        if protocol.extensions:
            broadcast((connection,), payload, text=True)
        else:
            transport.write(frame)
        written += 1
        if transport.get_write_buffer_size() > limit:
            slow.append(target)
    return written, slow


def abort(connection: Connection) -> None:
    """Drop the TCP connection now, without a closing handshake (a client not reading)."""
    connection.transport.abort()


def on_connection_lost(connection: Connection, callback: Callable[[], None]) -> None:
    """Call ``callback`` once the connection's TCP connection is lost (also for handshakes
    that never become a session)."""
    connection.connection_lost_waiter.add_done_callback(lambda _: callback())
