"""The lease and the fence in PostgreSQL: one row per cell, one trigger for every write.

Taking the lease is one statement that succeeds only when the row has expired by the
database's clock, and it raises the epoch; renewing matches the owner and the epoch and an
unexpired row. An instance's connection carries its fence token (``use_epoch``: the cell
and the epoch it was granted, as session settings); on every fenced table the
:data:`FENCE_FUNCTION` trigger checks that token against the lease row, locked ``FOR
SHARE``, for each insert, update and delete, and stamps ``(cell, epoch)`` on the row. A
write from a stale or tokenless session is refused by the database itself, whatever the
row says, and a take waits until the writes that passed the check have committed. (An
advisory lock carries no token: a frozen instance that wakes up would still write.) A new
connection holds no token: set it again after reconnecting.

Runs on a :class:`~carousel_gateway.database.Database` (the journal's thread calls these).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from carousel_gateway.database import Database

__all__ = [
    "FENCED_SQLSTATE",
    "FENCE_FUNCTION",
    "INSTANCES_SCHEMA",
    "LEASE_COLUMNS",
    "LEASE_SCHEMA",
    "Holder",
    "Instance",
    "ensure_schema",
    "fence_table",
    "holder",
    "instances",
    "mark_ready",
    "register_instance",
    "release",
    "renew",
    "take",
    "use_epoch",
]

#: The SQLSTATE of a write refused by the fence (a class of our own, "CG").
FENCED_SQLSTATE = "CGF01"

LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS ha_lease (
    cell          TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    advertise_url TEXT NOT NULL DEFAULT '',
    epoch         BIGINT NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    taken_at      TIMESTAMPTZ NOT NULL
);
"""

#: Columns added to the lease table since it was first made (by :func:`ensure_schema`).
LEASE_COLUMNS = {
    "renewed_at": "TIMESTAMPTZ",
    "previous_owner": "TEXT",
    "previous_renewed_at": "TIMESTAMPTZ",
    "ready_at": "TIMESTAMPTZ",
}
"""The lease row also keeps the takeover's record, by the database's clock: ``renewed_at``
(the holder's last sign of life: its take, latest renewal or release), and from the take
on, who held the row before (``previous_owner``) and that holder's ``renewed_at``
(``previous_renewed_at``); ``ready_at`` is set by the new holder once it has read every
machine of the cell. (Added columns: a cell created by an older gateway keeps its row.)"""

#: Every instance of each cell and its URLs, whatever the lease says: a page served by one
#: instance finds the others there after its own dies. Not fenced (a standby writes it).
INSTANCES_SCHEMA = """
CREATE TABLE IF NOT EXISTS ha_instances (
    cell          TEXT NOT NULL,
    instance      TEXT NOT NULL,
    advertise_url TEXT NOT NULL DEFAULT '',
    seen_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (cell, instance)
);
"""

# The SQLSTATE is written out (not formatted in) so the SQL stays one literal.
FENCE_FUNCTION = """
CREATE OR REPLACE FUNCTION carousel_fence() RETURNS trigger LANGUAGE plpgsql AS $fence$
DECLARE
    my_cell  TEXT := current_setting('carousel.cell', true);
    my_epoch TEXT := current_setting('carousel.epoch', true);
    held     RECORD;
BEGIN
    IF coalesce(my_cell, '') = '' OR coalesce(my_epoch, '') = '' THEN
        RAISE EXCEPTION 'fenced: this session holds no lease epoch'
            USING ERRCODE = 'CGF01';
    END IF;
    SELECT epoch, expires_at INTO held FROM ha_lease WHERE cell = my_cell FOR SHARE;
    IF NOT FOUND OR held.epoch <> my_epoch::BIGINT OR held.expires_at <= now() THEN
        RAISE EXCEPTION 'fenced: cell % epoch % does not hold the lease', my_cell, my_epoch
            USING ERRCODE = 'CGF01';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    NEW.cell := my_cell;
    NEW.epoch := my_epoch::BIGINT;
    RETURN NEW;
END
$fence$;
"""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a cell's lease, as the database says now."""

    owner: str
    advertise_url: str
    epoch: int
    expires_at: datetime
    valid: bool  # not yet expired by the database's clock
    taken_at: datetime | None = None
    #: The takeover record (None where unknown: a first take, a row of an older gateway).
    previous_owner: str | None = None
    previous_renewed_at: datetime | None = None
    ready_at: datetime | None = None

    @property
    def takeover_s(self) -> float | None:
        """From the previous holder's last sign of life to this holder being ready (by the
        database's clock, one decimal); None until ready or without a previous holder."""
        if self.ready_at is None or self.previous_renewed_at is None:
            return None
        return round((self.ready_at - self.previous_renewed_at).total_seconds(), 1)


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance of a cell as it registered itself (``ha_instances``)."""

    instance: str
    advertise_url: str
    seen_at: datetime


def ensure_schema(db: Database) -> None:
    """Create the lease table and the fence function (two instances may start at once)."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(7412804)")
        db.execute(LEASE_SCHEMA)
        # ALTER TABLE locks the table against everything, the active's renewals included,
        # even when there is nothing to add: only when a column is missing.
        present = db.query(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'ha_lease'::regclass"
            " AND attnum > 0 AND NOT attisdropped"
        )
        missing = set(LEASE_COLUMNS) - {row["attname"] for row in present}
        if missing:
            db.execute(
                "ALTER TABLE ha_lease "
                + ", ".join(
                    f"ADD COLUMN IF NOT EXISTS {name} {LEASE_COLUMNS[name]}"
                    for name in sorted(missing)
                )
            )
        db.execute(INSTANCES_SCHEMA)
        db.execute(FENCE_FUNCTION)


def fence_table(db: Database, table: str) -> None:
    """Fence ``table`` (it has ``cell`` and ``epoch`` columns): stale writes are refused."""
    if not table.isidentifier():
        raise ValueError(f"not a table name: {table!r}")
    with db.transaction():
        db.execute(f"DROP TRIGGER IF EXISTS {table}_fence ON {table}")
        db.execute(
            f"CREATE TRIGGER {table}_fence BEFORE INSERT OR UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION carousel_fence()"
        )


def use_epoch(
    db: Database, cell: str, epoch: int | None, idle_limit_s: float | None = None
) -> None:
    """Give this connection its fence token: its writes count as ``epoch`` of ``cell``
    (``None``: no token, every fenced write refused).

    ``idle_limit_s``: the server ends this session's transaction if it sits idle that
    long. A fenced write holds the lease row ``FOR SHARE`` until its COMMIT, and a take
    waits for that lock: an instance frozen (or cut off) between the two must not keep
    the standby out. Our writers never pause inside a transaction, so any such idle is a
    frozen client."""
    idle_ms = "0" if idle_limit_s is None else str(max(1, round(idle_limit_s * 1000)))
    db.query(
        "SELECT set_config('carousel.cell', ?, false), set_config('carousel.epoch', ?, false),"
        " set_config('idle_in_transaction_session_timeout', ?, false)",
        ("" if epoch is None else cell, "" if epoch is None else str(epoch), idle_ms),
    )


def take(db: Database, cell: str, owner: str, advertise_url: str, ttl_s: float) -> int | None:
    """Take the cell's lease if it is free (never held, or expired): the new epoch, or
    None while another instance's grant is still valid."""
    rows = db.query(
        "INSERT INTO ha_lease (cell, owner, advertise_url, epoch, expires_at, taken_at,"
        " renewed_at)"
        " VALUES (?, ?, ?, 1, now() + make_interval(secs => ?), now(), now())"
        # In SET, ha_lease.* is the row as it was: the previous holder's.
        " ON CONFLICT (cell) DO UPDATE SET owner = excluded.owner,"
        " advertise_url = excluded.advertise_url, epoch = ha_lease.epoch + 1,"
        " expires_at = excluded.expires_at, taken_at = now(), renewed_at = now(),"
        " previous_owner = ha_lease.owner, previous_renewed_at = ha_lease.renewed_at,"
        " ready_at = NULL"
        " WHERE ha_lease.expires_at < now()"
        " RETURNING epoch",
        (cell, owner, advertise_url, ttl_s),
    )
    return int(rows[0]["epoch"]) if rows else None


def renew(db: Database, cell: str, owner: str, epoch: int, ttl_s: float) -> bool:
    """Extend the grant; False when this owner and epoch no longer hold an unexpired one."""
    changed = db.execute(
        "UPDATE ha_lease SET expires_at = now() + make_interval(secs => ?), renewed_at = now()"
        " WHERE cell = ? AND owner = ? AND epoch = ? AND expires_at > now()",
        (ttl_s, cell, owner, epoch),
    )
    return changed == 1


def release(db: Database, cell: str, owner: str, epoch: int) -> bool:
    """End the grant now (a planned stop), so the standby need not wait for the TTL."""
    changed = db.execute(
        "UPDATE ha_lease SET expires_at = now(), renewed_at = now()"
        " WHERE cell = ? AND owner = ? AND epoch = ?",
        (cell, owner, epoch),
    )
    return changed == 1


def mark_ready(db: Database, cell: str, owner: str, epoch: int) -> bool:
    """The holder of ``epoch`` has read every machine: ``ready_at`` is now (once; False
    when this owner and epoch no longer hold the row)."""
    changed = db.execute(
        "UPDATE ha_lease SET ready_at = now()"
        " WHERE cell = ? AND owner = ? AND epoch = ? AND ready_at IS NULL",
        (cell, owner, epoch),
    )
    return changed == 1


def holder(db: Database, cell: str) -> Holder | None:
    """The cell's lease row, if it was ever taken."""
    rows = db.query(
        "SELECT owner, advertise_url, epoch, expires_at, expires_at > now() AS valid,"
        " taken_at, previous_owner, previous_renewed_at, ready_at"
        " FROM ha_lease WHERE cell = ?",
        (cell,),
    )
    if not rows:
        return None
    row = rows[0]
    return Holder(
        row["owner"],
        row["advertise_url"],
        int(row["epoch"]),
        row["expires_at"],
        row["valid"],
        taken_at=row["taken_at"],
        previous_owner=row["previous_owner"],
        previous_renewed_at=row["previous_renewed_at"],
        ready_at=row["ready_at"],
    )


def register_instance(db: Database, cell: str, instance: str, advertise_url: str) -> None:
    """This instance of ``cell`` and its URLs (now, by the database's clock)."""
    db.execute(
        "INSERT INTO ha_instances (cell, instance, advertise_url, seen_at) VALUES (?, ?, ?, now())"
        " ON CONFLICT (cell, instance) DO UPDATE SET advertise_url = excluded.advertise_url,"
        " seen_at = now()",
        (cell, instance, advertise_url),
    )


def instances(db: Database, cell: str) -> list[Instance]:
    """Every instance that registered for ``cell``, by name."""
    rows = db.query(
        "SELECT instance, advertise_url, seen_at FROM ha_instances WHERE cell = ?"
        " ORDER BY instance",
        (cell,),
    )
    return [Instance(row["instance"], row["advertise_url"], row["seen_at"]) for row in rows]
