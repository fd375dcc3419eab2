"""The cell's lease and the fence on a real PostgreSQL: one holder at a time, by the
database's clock, and a stale epoch's writes refused by the database itself."""

from __future__ import annotations

import time

import psycopg
import pytest

from carousel_gateway.database import Database, open_database
from carousel_gateway.ha.lease_store import (
    FENCED_SQLSTATE,
    ensure_schema,
    fence_table,
    holder,
    release,
    renew,
    take,
    use_epoch,
)

CELL = "cell_a"


def connect(url: str) -> Database:
    db = open_database(url, sqlite_schema="", postgres_schema="SELECT 1")
    ensure_schema(db)
    return db


def wait_expired(db: Database, cell: str = CELL, limit_s: float = 30.0) -> None:
    """Until the database's own clock has passed the grant's expiry (the lease's time,
    read from the database, not a sleep of ours)."""
    deadline = time.monotonic() + limit_s
    while (current := holder(db, cell)) is not None and current.valid:
        assert time.monotonic() < deadline, "the grant never expired"
        db.query("SELECT pg_sleep(0.02)")


@pytest.fixture
def pair(postgres_server):
    url = postgres_server.url_for_new_schema()
    a, b = connect(url), connect(url)  # two gateway instances
    a.execute("CREATE TABLE intents (id BIGSERIAL PRIMARY KEY, cell TEXT, epoch BIGINT, what TEXT)")
    fence_table(a, "intents")
    yield a, b
    a.close()
    b.close()


def write(db: Database, what: str) -> None:
    db.execute("INSERT INTO intents (what) VALUES (?)", (what,))


def test_one_holder_at_a_time_and_the_epoch_rises_at_each_take(pair) -> None:
    a, b = pair
    assert take(a, CELL, "A", "http://a:5000", ttl_s=0.4) == 1
    assert take(b, CELL, "B", "http://b:5000", ttl_s=0.4) is None  # A's grant is valid
    current = holder(b, CELL)
    assert current is not None and current.owner == "A" and current.epoch == 1
    assert current.advertise_url == "http://a:5000" and current.valid
    assert renew(a, CELL, "A", 1, ttl_s=0.4)
    assert not renew(b, CELL, "B", 1, ttl_s=0.4)  # not B's
    wait_expired(b)
    assert not renew(a, CELL, "A", 1, ttl_s=0.4)  # expired: no silent comeback
    assert take(b, CELL, "B", "http://b:5000", ttl_s=30) == 2
    assert not renew(a, CELL, "A", 1, ttl_s=30)
    assert release(b, CELL, "B", 2)  # a planned stop: A need not wait for the TTL
    assert take(a, CELL, "A", "http://a:5000", ttl_s=30) == 3


def test_the_database_refuses_a_stale_epochs_writes(pair) -> None:
    a, b = pair
    with pytest.raises(psycopg.Error) as tokenless:
        write(a, "before any lease")
    assert tokenless.value.sqlstate == FENCED_SQLSTATE
    assert take(a, CELL, "A", "", ttl_s=0.3) == 1
    use_epoch(a, CELL, 1)
    write(a, "A's intent while it holds the lease")
    wait_expired(a)
    with pytest.raises(psycopg.Error) as late:  # expired, even before anyone took over
        write(a, "A after its grant ended")
    assert late.value.sqlstate == FENCED_SQLSTATE
    assert take(b, CELL, "B", "", ttl_s=30) == 2
    use_epoch(b, CELL, 2)
    write(b, "B's intent")
    with pytest.raises(psycopg.Error) as stale:  # a frozen A that wakes up
        write(a, "A, woken up")
    assert stale.value.sqlstate == FENCED_SQLSTATE and "fenced" in str(stale.value)
    for statement in (  # whatever the rows say, a stale session changes nothing
        "UPDATE intents SET what = 'rewritten by A'",
        "UPDATE intents SET epoch = 2, cell = 'cell_a' WHERE epoch = 1",
        "DELETE FROM intents",
        "INSERT INTO intents (cell, epoch, what) VALUES ('cell_a', 2, 'forged')",
    ):
        with pytest.raises(psycopg.Error) as refused:
            a.execute(statement)
        assert refused.value.sqlstate == FENCED_SQLSTATE, statement
    rows = b.query("SELECT cell, epoch, what FROM intents ORDER BY id")
    assert [(r["cell"], r["epoch"], r["what"]) for r in rows] == [
        (CELL, 1, "A's intent while it holds the lease"),
        (CELL, 2, "B's intent"),  # stamped by the database from B's token
    ]


def test_a_bounded_connection_keeps_the_urls_schema_and_times_out(postgres_server) -> None:
    """The lease connection's bounds add to the URL's own options (the schema) and a
    statement longer than them fails instead of hanging the lease thread."""
    url = postgres_server.url_for_new_schema()
    plain = connect(url)
    plain.execute("CREATE TABLE marker (x INTEGER)")
    bounded = open_database(url, sqlite_schema="", postgres_schema="SELECT 1", timeout_s=0.3)
    try:
        assert bounded.query("SHOW statement_timeout")[0]["statement_timeout"] == "300ms"
        assert bounded.query("SELECT count(*) AS n FROM marker")[0]["n"] == 0  # same schema
        with pytest.raises(psycopg.errors.QueryCanceled):
            bounded.query("SELECT pg_sleep(5)")
    finally:
        bounded.close()
        plain.close()


def test_a_writer_frozen_inside_its_transaction_does_not_keep_the_standby_out(pair) -> None:
    """A fenced write holds the lease row FOR SHARE until COMMIT; an instance frozen in
    between would block every take. With the token's idle limit the server ends that
    transaction, so the take goes through (and the frozen write never commits)."""
    a, b = pair
    assert take(a, CELL, "A", "", ttl_s=0.3) == 1
    use_epoch(a, CELL, 1, idle_limit_s=0.5)
    # The commit fails: the server has ended that session.
    with pytest.raises(psycopg.Error), a.transaction():
        write(a, "A, frozen before its COMMIT")
        # A is now "frozen": idle in its transaction, the lease row locked FOR SHARE.
        wait_expired(b)
        assert take(b, CELL, "B", "", ttl_s=30) == 2  # waits for A's lock, then passes
    assert b.query("SELECT count(*) AS n FROM intents")[0]["n"] == 0
