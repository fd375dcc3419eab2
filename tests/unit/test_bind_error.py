"""A server that cannot listen is named, with the setting that fixes it (app.BindError)."""

from __future__ import annotations

import errno
import socket

import pytest

from carousel_gateway.app import BindError


def bind_error(cause: OSError) -> BindError:
    return BindError(
        cause,
        server="WebSocket API",
        host="10.9.9.9",
        port=8765,
        port_setting="[websocket] port",
        host_setting="[websocket] host",
    )


@pytest.mark.parametrize(
    ("cause", "message"),
    [
        (
            OSError(errno.EADDRINUSE, "Address already in use"),
            "port 8765 (WebSocket API) is in use; set [websocket] port in the config",
        ),
        (
            OSError(errno.EACCES, "Permission denied"),
            "port 8765 (WebSocket API): permission denied (a port below 1024?); "
            "set [websocket] port in the config",
        ),
        (
            OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"),
            "WebSocket API: 10.9.9.9 is not an address of this machine; "
            "set [websocket] host in the config",
        ),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "WebSocket API: host '10.9.9.9' is not a known name or address; "
            "set [websocket] host in the config",
        ),
    ],
)
def test_the_message_names_the_server_and_the_setting(cause: OSError, message: str) -> None:
    error = bind_error(cause)
    assert str(error) == message
    assert "Errno" not in str(error)
    assert error.errno == cause.errno  # still an OSError callers can inspect
