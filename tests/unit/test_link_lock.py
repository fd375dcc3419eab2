"""The link lock: asyncio.Lock's behaviour, plus a try_acquire that never jumps the queue."""

from __future__ import annotations

import asyncio

import pytest

from carousel_gateway.plc.link_lock import LinkLock

pytestmark = pytest.mark.asyncio


async def test_try_acquire_takes_a_free_lock_and_refuses_a_held_one() -> None:
    lock = LinkLock()
    assert lock.try_acquire() and lock.locked()
    assert not lock.try_acquire()
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()


async def test_waiters_get_the_lock_in_order_and_try_acquire_never_jumps_them() -> None:
    lock = LinkLock()
    order: list[int] = []

    async def take(n: int) -> None:
        async with lock:
            order.append(n)
            await asyncio.sleep(0)

    assert lock.try_acquire()
    tasks = [asyncio.create_task(take(n)) for n in range(3)]
    await asyncio.sleep(0)  # all three queued
    lock.release()
    assert not lock.try_acquire()  # the first waiter was woken: it is its turn
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert lock.try_acquire()


async def test_a_woken_waiter_cancelled_before_it_runs_passes_the_lock_on() -> None:
    lock = LinkLock()
    assert lock.try_acquire()
    first = asyncio.create_task(lock.acquire())
    second = asyncio.create_task(lock.acquire())
    await asyncio.sleep(0)
    lock.release()  # wakes the first...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.wait_for(second, 5)  # the second gets the lock
    assert first.cancelled() and lock.locked()
    lock.release()
    assert lock.try_acquire()
