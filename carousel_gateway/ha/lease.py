"""The active's lease as its own clock sees it: when to renew, when to fence itself.

The database sets ``expires_at = now() + ttl`` when it grants or renews the lease, and
its ``now()`` is read after the request left this instance. So a grant to a request sent
at local time ``t`` (monotonic) expires at the database no earlier than ``t + ttl``; this
instance fences itself at ``t + ttl - margin``, which always comes first, whatever the
request's latency. A standby can only take the lease after the database expiry: by then
the old active has stopped driving its carousels. Sans-I/O: the caller sends the SQL and
reports what came back, with the times it took.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["LeaseKeeper", "LeaseSettings", "Role"]


class Role(StrEnum):
    STANDBY = "standby"  # holds no lease: reads only, never opens a PLC link
    ACTIVE = "active"  # holds the lease (``epoch``) until ``deadline``
    FENCED = "fenced"  # was active, lost or outlived its lease: stops driving, then standby


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    ttl_s: float = 5.0  # how long a grant lasts at the database
    renew_s: float = 1.0  # how often the active renews
    margin_s: float = 0.5  # the active fences itself this long before its grant could end

    def __post_init__(self) -> None:
        if not 0 < self.margin_s < self.ttl_s:
            raise ValueError("margin_s must be between 0 and ttl_s")
        if not 0 < self.renew_s < self.ttl_s - self.margin_s:
            raise ValueError(
                "renew_s must be shorter than ttl_s - margin_s, or the active fences itself "
                "before its first renewal"
            )


class LeaseKeeper:
    """One instance's view of its lease: the role, the epoch, the local deadline."""

    def __init__(self, settings: LeaseSettings) -> None:
        self.settings = settings
        self.role = Role.STANDBY
        self.epoch: int | None = None
        #: Local monotonic time at which an active instance fences itself.
        self.deadline: float | None = None
        self._next_renew: float | None = None

    def granted(self, epoch: int, sent_at: float) -> None:
        """The database granted (or renewed) ``epoch`` to a request sent at ``sent_at``."""
        if self.role is Role.ACTIVE and epoch != self.epoch:
            raise ValueError(f"renewal returned epoch {epoch}, held {self.epoch}")
        if self.role is Role.FENCED:
            return  # too late: a fenced instance does not come back without a new take
        self.role = Role.ACTIVE
        self.epoch = epoch
        self.deadline = sent_at + self.settings.ttl_s - self.settings.margin_s
        self._next_renew = sent_at + self.settings.renew_s

    def refused(self) -> None:
        """A renewal matched no row: another instance holds the lease, or it expired."""
        if self.role is Role.ACTIVE:
            self.role = Role.FENCED

    def tick(self, now: float) -> Role:
        """The role at ``now``: an active instance past its deadline is fenced."""
        if self.role is Role.ACTIVE and self.deadline is not None and now >= self.deadline:
            self.role = Role.FENCED
        return self.role

    def renew_due(self, now: float) -> bool:
        """True when an active instance should send its next renewal."""
        return (
            self.tick(now) is Role.ACTIVE
            and self._next_renew is not None
            and now >= self._next_renew
        )

    def next_wakeup(self, now: float) -> float | None:
        """Seconds until the next renewal or the deadline, whichever comes first."""
        if self.tick(now) is not Role.ACTIVE:
            return None
        assert self.deadline is not None and self._next_renew is not None
        return max(0.0, min(self._next_renew, self.deadline) - now)

    def stood_down(self) -> None:
        """The fenced instance has stopped driving its carousels: a standby again."""
        self.role = Role.STANDBY
        self.epoch = None
        self.deadline = None
        self._next_renew = None
