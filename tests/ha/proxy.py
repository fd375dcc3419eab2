"""A TCP proxy that can partition the network silently, like a pulled cable.

Between a gateway and a PLC (or PostgreSQL): ``partition()`` stops forwarding in both
directions without closing anything. Bytes already read are held, further bytes stay in
the senders' kernel buffers (TCP keeps them, as it does while a cable is out), and no side
sees a reset or an end of stream. ``heal()`` lets the held bytes through. A connection made
during a partition is accepted but not connected onwards until the heal: reaching the
target then would take a single-session PLC's slot on behalf of a client that cannot talk.
The upstream side can bind a source address of its own, so the target sees which
instance a connection stands for.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["TcpProxy"]

_CHUNK = 65536


class TcpProxy:
    """Forwards ``listen_host:port`` to ``target_host:target_port`` until told otherwise."""

    def __init__(
        self,
        target_port: int,
        *,
        target_host: str = "127.0.0.1",
        listen_host: str = "127.0.0.1",
        source_host: str | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.source_host = source_host
        self.port = 0
        self.connections_accepted = 0
        self._open = asyncio.Event()
        self._open.set()
        self._closing = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def partitioned(self) -> bool:
        return not self._open.is_set()

    @property
    def open_connections(self) -> int:
        """Client connections being served (each with its upstream once connected)."""
        return len(self._tasks)

    async def start(self) -> int:
        """Listen on a free port; returns it."""
        self._server = await asyncio.start_server(self._serve, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def partition(self) -> None:
        """Stop forwarding both ways; every socket stays open."""
        self._open.clear()

    def heal(self) -> None:
        """Forward again, held bytes first."""
        self._open.set()

    async def close(self) -> None:
        """Stop listening and abort every connection."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        # Let every connection's task see its aborted sockets and end by itself (a
        # cancelled connection task is logged as an error by asyncio's streams).
        self._open.set()
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=10)
            for task in pending:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_w)
        self.connections_accepted += 1
        upstream_w: asyncio.StreamWriter | None = None
        try:
            await self._open.wait()  # no onward connection while the cable is out
            if self._closing:
                return
            local = (self.source_host, 0) if self.source_host is not None else None
            try:
                upstream_r, upstream_w = await asyncio.open_connection(
                    *self.target, local_addr=local
                )
            except OSError:
                return  # the target refuses: so does the proxy (the client sees it close)
            self._writers.add(upstream_w)
            pumps = [
                asyncio.create_task(self._pump(client_r, upstream_w)),
                asyncio.create_task(self._pump(upstream_r, client_w)),
            ]
            try:
                # One side ends (closed, reset): the other is ended too, as a host would.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for writer in (client_w, upstream_w):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.transport.abort()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy bytes one way, holding them (and reading no more) while partitioned."""
        with contextlib.suppress(OSError):
            while True:
                await self._open.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    return
                await self._open.wait()
                writer.write(data)
                await writer.drain()
