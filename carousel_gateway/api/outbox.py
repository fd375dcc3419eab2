"""Writing messages to sessions: framed once, written in slices, in order for each session.

A broadcast is one encoded payload for many sessions. Its WebSocket frame is built once
(:func:`text_frame`: a server's frames are not masked, so with no extension negotiated the
bytes on the wire are the same for every session) and written to each session as is, by
:func:`~carousel_gateway.api.ws_internals.write_text_frames`: per session a state check, one
transport write and a look at the write buffer, nothing else (sessions that negotiated
permessage-deflate get the payload framed and compressed for them). How that is done with
``websockets``' private internals, and why it is safe, is in ``ws_internals.py``.

A broadcast to more sessions than ``slice_size`` is written a slice at a time, yielding to
the event loop between slices, so a thousand-session broadcast never holds the loop for its
whole duration (commands and pings are served in between). Ordering per session is kept:
broadcasts are written in the order they were sent; a message to a few sessions (a direct
reply, a command result) first writes, to each of them, what earlier broadcasts still owe
it, then goes out at once without waiting for the rest of those broadcasts.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from carousel_gateway.api.ws_internals import write_text_frames

__all__ = [
    "DIRECT_MAX",
    "Outbox",
    "Target",
    "text_frame",
]

#: A message to at most this many sessions is written at once (after what they are owed),
#: even while a large broadcast is still being written.
DIRECT_MAX = 8


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, unfragmented text frame (RFC 6455 §5.2), as a server sends it."""
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


class Target(Protocol):
    """What the outbox needs of a session."""

    alive: bool
    connection: Any  # websockets.asyncio.server.ServerConnection


T = TypeVar("T", bound=Target)

_NOBODY: frozenset[Any] = frozenset()  # ``skip`` when no session is to be skipped


@dataclass(eq=False, slots=True)
class _Job(Generic[T]):
    """A broadcast still being written."""

    targets: Sequence[T]
    kind: str
    frame: bytes
    payload: bytes
    done: Callable[[], None] | None
    cursor: int = 0  # targets before this index have been written
    #: Where each target sits in ``targets`` (built the first time a direct message asks).
    positions: dict[T, int] | None = None
    #: Targets past the cursor already written to (ahead of the others, see ``_owed``).
    early: set[T] | None = None


class Outbox(Generic[T]):
    """Writes frames to sessions: see the module docstring."""

    def __init__(
        self,
        *,
        slice_size: int,
        max_buffer_bytes: int,
        on_slow: Callable[[T], None],
        on_sent: Callable[[str, int], None],
    ) -> None:
        self.slice_size = max(1, slice_size)
        self.max_buffer_bytes = max_buffer_bytes
        self._on_slow = on_slow
        self._on_sent = on_sent
        self._jobs: deque[_Job[T]] = deque()
        self._scheduled = False
        #: Broadcasts written in more than one slice (diagnostics, tests).
        self.sliced = 0

    @property
    def pending(self) -> int:
        """Broadcasts not completely written yet."""
        return len(self._jobs)

    def send(
        self,
        targets: Sequence[T],
        kind: str,
        payload: bytes,
        done: Callable[[], None] | None = None,
    ) -> None:
        """Write ``payload`` (UTF-8 JSON) as a text message to every target.

        ``targets`` must not change afterwards (pass a tuple or a fresh list); ``done`` is
        called once every target has been written to.
        """
        if not targets:
            if done is not None:
                done()
            return
        frame = text_frame(payload)
        if self._jobs:
            if len(targets) > DIRECT_MAX:
                self._jobs.append(_Job(targets, kind, frame, payload, done))
                self.sliced += len(targets) > self.slice_size
                return
            for target in targets:
                self._pay_debts(target)
        elif len(targets) > self.slice_size:
            job = _Job(targets, kind, frame, payload, done)
            self._jobs.append(job)
            self.sliced += 1
            self._write_slice(job)  # the first slice now, the rest on later loop turns
            self._schedule()
            return
        self._on_sent(kind, self._write(targets, frame, payload, None))
        if done is not None:
            done()

    def clear(self) -> None:
        """Forget what is still to be written (shutdown)."""
        self._jobs.clear()

    # -- internals ------------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled and self._jobs:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        """One slice of the oldest broadcast per loop turn."""
        self._scheduled = False
        if self._jobs:
            job = self._jobs[0]
            if job.cursor >= len(job.targets) or self._write_slice(job):
                self._jobs.popleft()
                if job.done is not None:
                    job.done()
        self._schedule()

    def _write_slice(self, job: _Job[T]) -> bool:
        """Write the next slice of ``job``; True when it is complete."""
        start = job.cursor
        stop = min(len(job.targets), start + self.slice_size)
        job.cursor = stop
        targets = job.targets[start:stop]
        self._on_sent(job.kind, self._write(targets, job.frame, job.payload, job.early))
        return stop >= len(job.targets)

    def _pay_debts(self, target: T) -> None:
        """Write to ``target`` what broadcasts still being written owe it, in their order."""
        for job in self._jobs:
            if job.positions is None:
                job.positions = {t: i for i, t in enumerate(job.targets)}
            index = job.positions.get(target)
            if index is None or index < job.cursor:
                continue
            if job.early is None:
                job.early = set()
            elif target in job.early:
                continue
            job.early.add(target)
            self._on_sent(job.kind, self._write((target,), job.frame, job.payload, None))

    def _write(
        self, targets: Sequence[T], frame: bytes, payload: bytes, skip: set[T] | None
    ) -> int:
        """Write to the open sessions among ``targets``; how many were written."""
        written, slow = write_text_frames(
            targets, frame, payload, skip=skip or _NOBODY, limit=self.max_buffer_bytes
        )
        for target in slow:
            self._on_slow(target)
        return written
