"""The ``ha`` group: failover of two gateway processes (tests/ha/harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tests.postgresql.server import PostgresServer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here carries the ``ha`` mark (``pytest -m ha`` runs the group alone)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.ha)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ha: failover of two gateway processes (tests/ha)")


@pytest.fixture
async def cell_factory(
    postgres_server: PostgresServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Coroutine[Any, Any, Any]]]:
    """Builds a :class:`Cell` (simulators started); every process is killed at the end."""
    from .harness import Cell, CellSettings

    cells: list[Cell] = []

    async def make(**settings: Any) -> Cell:
        cell = Cell(postgres_server, tmp_path, CellSettings(**settings))
        cells.append(cell)
        await cell.start_simulators()
        return cell

    yield make
    for cell in cells:
        await cell.close()
