"""One exchange at a time on a PLC link: an asyncio lock that a loop callback can take too.

``asyncio.Lock`` is only acquired by awaiting it; the STATUS polls of a busy machine are
driven by the link's own callbacks (no task switch per poll, see
:meth:`~carousel_gateway.plc.connection.PlcConnection.try_status`), so they need
:meth:`LinkLock.try_acquire`. Everything else is ``asyncio.Lock``'s algorithm (Python 3.11):
``release`` wakes the first waiter, which takes the lock when it runs; a waiter woken but
cancelled before it runs wakes the next one; ``try_acquire`` never jumps a queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

__all__ = ["LinkLock"]


class LinkLock:
    """Mutual exclusion for one link's request/reply exchanges (see the module docstring)."""

    __slots__ = ("_locked", "_waiters")

    def __init__(self) -> None:
        self._locked = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    def locked(self) -> bool:
        return self._locked

    def try_acquire(self) -> bool:
        """Take the lock now if it is free and nobody is queued for it; False otherwise."""
        if self._locked or any(not waiter.cancelled() for waiter in self._waiters):
            return False
        self._locked = True
        return True

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        except asyncio.CancelledError:
            if not self._locked:
                self._wake_up_first()  # the wake this waiter got goes to the next one
            raise
        self._locked = True

    def release(self) -> None:
        if not self._locked:
            raise RuntimeError("LinkLock released while not held")
        self._locked = False
        self._wake_up_first()

    def _wake_up_first(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
