"""Prometheus' own linter judges our /metrics: ``promtool check metrics`` (Debian's
``prometheus`` package, installed by ``make test`` through tests/integration/deps.mk)."""

from __future__ import annotations

import asyncio
import shutil

import pytest

PROMTOOL = "/usr/bin/promtool"


async def assert_promtool_accepts(exposition: str) -> None:
    """``promtool check metrics`` reads the exposition text: no error, no lint problem."""
    if shutil.which(PROMTOOL) is None:
        pytest.fail("promtool is missing: `make test` installs it (tests/integration/deps.mk)")
    process = await asyncio.create_subprocess_exec(
        PROMTOOL,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(exposition.encode()), 60)
    text = output.decode(errors="replace").strip()
    assert process.returncode == 0 and not text, f"promtool check metrics:\n{text}"
