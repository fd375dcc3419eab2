"""Wire times: the spec's UTC ISO 8601 timestamps, and epoch seconds from a datetime.

Stdlib only, so that both the server and the client can stamp and read messages.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = [
    "epoch_seconds",
    "utc_timestamp",
]


def epoch_seconds(moment: datetime | None) -> float | None:
    """Seconds since the epoch; a time without a zone is taken as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def utc_timestamp(at: float | None = None) -> str:
    """UTC ISO 8601 with milliseconds and ``Z`` (e.g. ``2025-01-27T10:30:00.000Z``)."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
