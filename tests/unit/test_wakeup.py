"""The poll loop's pause: a sleep that a command or a link change cuts short."""

from __future__ import annotations

import asyncio

import pytest

from carousel_gateway.fleet.readings import Wakeup

pytestmark = pytest.mark.asyncio


async def test_set_ends_the_pause_under_way() -> None:
    wakeup = Wakeup()
    loop = asyncio.get_running_loop()
    pause = asyncio.create_task(wakeup.sleep(loop, 3600.0))
    await asyncio.sleep(0)  # the pause has started
    assert not pause.done()
    wakeup.set()
    async with asyncio.timeout(30):  # woken, long before its hour
        await pause


async def test_a_pause_runs_its_course_without_a_wake() -> None:
    wakeup = Wakeup()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wakeup.sleep(loop, 0.02)
    assert loop.time() >= started + 0.02 - 0.001  # the loop's clock granularity


async def test_a_pause_until_woken_waits_for_set() -> None:
    wakeup = Wakeup()
    loop = asyncio.get_running_loop()
    pause = asyncio.create_task(wakeup.sleep(loop, None))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not pause.done()
    wakeup.set()
    async with asyncio.timeout(30):
        await pause


async def test_a_wake_with_nobody_pausing_is_dropped() -> None:
    # The loops look at the machine's state before each pause, so an earlier wake is
    # already accounted for; it must not end the next pause.
    wakeup = Wakeup()
    loop = asyncio.get_running_loop()
    wakeup.set()
    pause = asyncio.create_task(wakeup.sleep(loop, None))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not pause.done()
    pause.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pause


async def test_a_cancelled_pause_leaves_nothing_behind() -> None:
    wakeup = Wakeup()
    loop = asyncio.get_running_loop()
    pause = asyncio.create_task(wakeup.sleep(loop, 3600.0))
    await asyncio.sleep(0)
    pause.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pause
    wakeup.set()  # nobody pausing: nothing to wake, nothing raised
    second = asyncio.create_task(wakeup.sleep(loop, None))
    await asyncio.sleep(0)
    wakeup.set()
    async with asyncio.timeout(30):
        await second
