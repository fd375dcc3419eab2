"""The Sparkplug bdSeq lives in the journal: the next connection's number survives a
restart (or a kill), per node, and wraps at 256."""

from __future__ import annotations

from carousel_gateway.store import Journal


async def test_bd_seq_counts_per_node_across_restarts_and_wraps(journal_target):
    path = journal_target  # a SQLite file, or a PostgreSQL schema
    journal = Journal(path)
    await journal.start()
    assert [await journal.next_bd_seq("site/cell_a") for _ in range(3)] == [0, 1, 2]
    assert await journal.next_bd_seq("site/cell_b") == 0
    await journal.stop()
    again = Journal(path)
    await again.start()
    assert await again.next_bd_seq("site/cell_a") == 3
    for _ in range(252):
        await again.next_bd_seq("site/cell_a")
    assert await again.next_bd_seq("site/cell_a") == 0
    await again.stop()
