"""The takeover record in the lease row, by PostgreSQL's clock: who held the lease before,
that holder's last sign of life, when the new holder took it and when it was ready; and
each instance of a cell registered with its URLs."""

from __future__ import annotations

import time

import pytest

from carousel_gateway.database import Database, open_database
from carousel_gateway.ha.lease_store import (
    LEASE_SCHEMA,
    ensure_schema,
    holder,
    instances,
    mark_ready,
    register_instance,
    release,
    renew,
    take,
)

CELL = "cell_t"


def connect(url: str) -> Database:
    db = open_database(url, sqlite_schema="", postgres_schema="SELECT 1")
    ensure_schema(db)
    return db


def wait_expired(db: Database, limit_s: float = 30.0) -> None:
    """Until the database's clock has passed the grant's expiry."""
    deadline = time.monotonic() + limit_s
    while (current := holder(db, CELL)) is not None and current.valid:
        assert time.monotonic() < deadline, "the grant never expired"
        db.query("SELECT pg_sleep(0.02)")


@pytest.fixture
def url(postgres_server) -> str:
    schema_url: str = postgres_server.url_for_new_schema()
    return schema_url


@pytest.fixture
def pair(url: str):
    a, b = connect(url), connect(url)
    yield a, b
    a.close()
    b.close()


def renewed_at(db: Database) -> object:
    return db.query("SELECT renewed_at FROM ha_lease WHERE cell = ?", (CELL,))[0]["renewed_at"]


def test_a_takeover_names_the_previous_holder_and_its_last_renewal(pair) -> None:
    a, b = pair
    assert take(a, CELL, "A", "", ttl_s=0.4) == 1
    first = holder(a, CELL)
    assert first is not None and first.previous_owner is None and first.takeover_s is None
    assert renew(a, CELL, "A", 1, ttl_s=0.4)
    last_sign_of_life = renewed_at(a)
    wait_expired(b)
    assert take(b, CELL, "B", "", ttl_s=30) == 2

    record = holder(b, CELL)
    assert record is not None and record.owner == "B" and record.epoch == 2
    assert record.previous_owner == "A"
    assert record.previous_renewed_at == last_sign_of_life
    assert record.taken_at is not None and record.previous_renewed_at is not None
    assert record.previous_renewed_at <= record.taken_at
    assert record.ready_at is None and record.takeover_s is None  # not ready yet

    # ready_at: only by the holder of that epoch, and once.
    assert not mark_ready(a, CELL, "A", 1)
    assert not mark_ready(a, CELL, "A", 2)
    assert not mark_ready(b, CELL, "B", 1)
    assert holder(a, CELL).ready_at is None  # type: ignore[union-attr]
    assert mark_ready(b, CELL, "B", 2)
    ready = holder(a, CELL)
    assert ready is not None and ready.ready_at is not None
    assert ready.taken_at is not None and ready.taken_at <= ready.ready_at
    assert not mark_ready(b, CELL, "B", 2)  # already noted: the first time stands
    assert holder(a, CELL).ready_at == ready.ready_at  # type: ignore[union-attr]
    seconds = ready.takeover_s
    assert seconds is not None and seconds >= 0
    assert seconds == round((ready.ready_at - ready.previous_renewed_at).total_seconds(), 1)  # type: ignore[operator]


def test_a_release_is_the_last_sign_of_life_and_a_new_take_forgets_ready(pair) -> None:
    a, b = pair
    assert take(a, CELL, "A", "", ttl_s=30) == 1
    assert mark_ready(a, CELL, "A", 1)
    assert release(a, CELL, "A", 1)  # a planned stop
    released = renewed_at(b)
    assert take(b, CELL, "B", "", ttl_s=30) == 2
    record = holder(b, CELL)
    assert record is not None
    assert record.previous_owner == "A" and record.previous_renewed_at == released
    assert record.ready_at is None  # A's readiness is not B's


def test_an_older_lease_row_gains_the_columns_and_both_instances_may_start_at_once(
    postgres_server,
) -> None:
    url = postgres_server.url_for_new_schema()
    old = open_database(url, sqlite_schema="", postgres_schema="SELECT 1")
    old.execute(LEASE_SCHEMA)  # the table as older gateways made it
    old.execute(
        "INSERT INTO ha_lease (cell, owner, advertise_url, epoch, expires_at, taken_at)"
        " VALUES (?, 'A', '', 4, now() - interval '1 second', now() - interval '9 seconds')",
        (CELL,),
    )
    a, b = connect(url), connect(url)  # schema ensured twice, the row kept
    try:
        assert take(b, CELL, "B", "", ttl_s=30) == 5
        record = holder(a, CELL)
        assert record is not None and record.previous_owner == "A"
        assert record.previous_renewed_at is None  # unknown: no duration is made up
        assert mark_ready(b, CELL, "B", 5) and holder(a, CELL).takeover_s is None  # type: ignore[union-attr]
    finally:
        for db in (old, a, b):
            db.close()


def test_every_instance_registers_its_urls(pair) -> None:
    a, b = pair
    register_instance(a, CELL, "A", '{"http":"http://a:1","ws":"ws://a:2"}')
    register_instance(b, CELL, "B", '{"http":"http://b:1","ws":"ws://b:2"}')
    register_instance(b, "other_cell", "C", "")
    first = {i.instance: i for i in instances(a, CELL)}
    assert sorted(first) == ["A", "B"]
    assert first["B"].advertise_url == '{"http":"http://b:1","ws":"ws://b:2"}'
    register_instance(a, CELL, "A", '{"http":"http://a2:1","ws":"ws://a2:2"}')  # refreshed
    again = {i.instance: i for i in instances(b, CELL)}
    assert again["A"].advertise_url == '{"http":"http://a2:1","ws":"ws://a2:2"}'
    assert again["A"].seen_at >= first["A"].seen_at


def test_ensuring_the_schema_again_does_not_wait_for_the_actives_transactions(
    pair, url: str
) -> None:
    """A standby (re)connecting must not queue an ALTER TABLE between the active and its
    lease row: with every column there, ensure_schema takes no table lock at all, so it
    passes while a fenced write holds the row FOR SHARE."""
    a, _ = pair
    assert take(a, CELL, "A", "", ttl_s=30) == 1
    bounded = open_database(url, sqlite_schema="", postgres_schema="SELECT 1", timeout_s=1.0)
    try:
        with a.transaction():
            a.query("SELECT epoch FROM ha_lease WHERE cell = ? FOR SHARE", (CELL,))
            ensure_schema(bounded)  # would be cancelled at 1 s if it waited for A's lock
    finally:
        bounded.close()
