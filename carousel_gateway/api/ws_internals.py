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

from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import broadcast
from websockets.protocol import State

__all__ = [
    "VERIFIED_VERSIONS",
    "Connection",
    "abort",
    "on_connection_lost",
    "write_text_frame",
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


def write_text_frame(connection: Connection, frame: bytes, payload: bytes) -> int | None:
    """Write ``frame`` (a complete unmasked text frame carrying ``payload``) to the
    connection without awaiting; the bytes it has buffered afterwards, or None when it was
    skipped (not OPEN, or a fragmented send under way).

    A connection that negotiated an extension (permessage-deflate) has its own compression
    context: ``payload`` then goes through ``websockets``' ``broadcast()``, which frames and
    compresses it for that connection.
    """
    protocol = connection.protocol
    if protocol.state is not _OPEN or connection.send_in_progress is not None:
        return None
    transport = connection.transport
    if protocol.extensions:
        broadcast((connection,), payload, text=True)
    else:
        transport.write(frame)
    buffered: int = transport.get_write_buffer_size()
    return buffered


def abort(connection: Connection) -> None:
    """Drop the TCP connection now, without a closing handshake (a client not reading)."""
    connection.transport.abort()


def on_connection_lost(connection: Connection, callback: Callable[[], None]) -> None:
    """Call ``callback`` once the connection's TCP connection is lost (also for handshakes
    that never become a session)."""
    connection.connection_lost_waiter.add_done_callback(lambda _: callback())
