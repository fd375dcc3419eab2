"""Serves the REST application with uvicorn on a socket the gateway binds itself."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

import uvicorn
from fastapi import FastAPI

from carousel_gateway.api import edge
from carousel_gateway.api.http.gatekeeper import DOCS_PAGES
from carousel_gateway.api.http.state import RestApi, instance_origins
from carousel_gateway.api.http.uvicorn_embedding import EmbeddedServer

__all__ = [
    "GRACEFUL_SHUTDOWN_S",
    "HttpServer",
]

log = logging.getLogger(__name__)

#: Seconds uvicorn gives open requests to finish at shutdown before cancelling them.
GRACEFUL_SHUTDOWN_S = 5


class HttpServer:
    """Serves a FastAPI app built by :func:`create_app` with ``uvicorn.Server.serve()``."""

    def __init__(
        self, app: FastAPI, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.app = app
        self.api: RestApi = app.state.api
        self.host = host
        self.ssl_context = ssl_context
        self._requested_port = port
        self._port: int | None = None
        self._server: EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when configured as 0)."""
        assert self._port is not None, "the HTTP server is not started"
        return self._port

    async def start(self) -> None:
        # Binding here makes a busy port an OSError for the caller (uvicorn would exit).
        api = self.api
        served = await edge.wrap(
            self.app, docs_paths=DOCS_PAGES, connect_origins=lambda: instance_origins(api.ha)
        )
        sock = _listening_socket(self.host, self._requested_port)
        config = uvicorn.Config(
            served,
            lifespan="off",
            log_config=None,  # the gateway configures logging; uvicorn.access logs at INFO
            ws="none",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            server_header=False,  # edge.py says `Server: carousel-gateway`, no versions
        )
        config.load()
        # The gateway's own TLS context (the one the WebSocket server uses too), not one
        # built by uvicorn from file names with its own cipher choice.
        config.ssl = self.ssl_context
        server = EmbeddedServer(config)
        task = asyncio.get_running_loop().create_task(
            server.serve(sockets=[sock]), name="http-server"
        )
        listening = asyncio.ensure_future(server.listening.wait())
        await asyncio.wait({task, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():
            listening.cancel()
            sock.close()
            task.result()  # raises what stopped it
            raise RuntimeError("the HTTP server stopped while starting")
        self._server, self._task = server, task
        self._port = sock.getsockname()[1]
        self.api.ready = True
        scheme = "https" if self.ssl_context is not None else "http"
        log.info("REST API on %s://%s:%d", scheme, self.host, self._port)

    async def stop(self) -> None:
        """Refuse readiness, release waiting requests, let uvicorn finish open ones."""
        self.api.close()
        server, task = self._server, self._task
        self._server = self._task = None
        if server is not None and task is not None:
            server.request_exit()
            await task
        # Commands already handed to machines finish (and are journalled) before the fleet
        # and the journal stop.
        await self.api.runner.drain()


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for uvicorn.

    Its protocol must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted
    sockets of that protocol, and without it every reply waits ~40 ms (Nagle + delayed ACK).
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None,
        port,
        type=socket.SOCK_STREAM,
        proto=socket.IPPROTO_TCP,
        flags=socket.AI_PASSIVE,
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
