"""Endpoints that read the journal: a machine's history and the whole fleet's events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from fastapi import Query

from carousel_gateway.api.conversions import history_entry
from carousel_gateway.api.http.deps import ApiDep, MachineDep, protected_router
from carousel_gateway.api.http.errors import HISTORY_ERRORS, documented_errors
from carousel_gateway.api.http.models import HistoryData, HistoryResponse
from carousel_gateway.api.http.state import RestApi
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.store import KINDS
from carousel_gateway.wire import (
    HistoryKind,
    IsoDateTime,
    epoch_seconds,
)

__all__ = [
    "CursorQuery",
    "KindsQuery",
    "LimitQuery",
    "SinceQuery",
    "UntilQuery",
    "all_events",
    "machine_history",
    "router",
]

router = protected_router()


_HISTORY_KINDS = ", ".join(KINDS)

SinceQuery = Annotated[IsoDateTime | None, Query(description="Only entries at or after (ISO 8601)")]

UntilQuery = Annotated[
    IsoDateTime | None, Query(description="Only entries at or before (ISO 8601)")
]

KindsQuery = Annotated[
    list[HistoryKind] | None,
    Query(description=f"Only these kinds (repeat the parameter): {_HISTORY_KINDS}"),
]

LimitQuery = Annotated[int, Query(ge=1, le=1000, description="Entries per page (newest first)")]

CursorQuery = Annotated[
    int | None, Query(ge=1, le=2**62, description="next_cursor of the previous page")
]


async def _history(
    api: RestApi,
    machine_id: str | None,
    since: datetime | None,
    until: datetime | None,
    kinds: Sequence[str] | None,
    limit: int,
    cursor: int | None,
) -> HistoryResponse:
    if api.journal is None:
        raise GatewayError(ErrorCode.JOURNAL_UNAVAILABLE, "the journal is disabled")
    page = await api.journal.history(
        machine_id,
        since=epoch_seconds(since),
        until=epoch_seconds(until),
        kinds=kinds,
        limit=limit,
        cursor=cursor,
    )
    return HistoryResponse(
        machine_id=machine_id,
        data=HistoryData(
            entries=[history_entry(row) for row in page.rows], next_cursor=page.next_cursor
        ),
    )


@router.get(
    "/v1/machines/{machine_id}/history",
    response_model=HistoryResponse,
    responses=documented_errors(*HISTORY_ERRORS),
    summary="A machine's journal: commands (who, what, outcome) and events, newest first",
    tags=["Journal"],
)
async def machine_history(
    api: ApiDep,
    machine: MachineDep,
    since: SinceQuery = None,
    until: UntilQuery = None,
    kinds: KindsQuery = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> HistoryResponse:
    """Pages of the machine's journal, newest first, filtered by time and kind; pass
    `next_cursor` back as `cursor` for the next, older page."""
    return await _history(api, machine.id, since, until, kinds, limit, cursor)


@router.get(
    "/v1/events",
    response_model=HistoryResponse,
    responses=documented_errors(*(s for s in HISTORY_ERRORS if s != 404)),
    summary="Every machine's journal, newest first (same filters as a machine's history)",
    tags=["Journal"],
)
async def all_events(
    api: ApiDep,
    since: SinceQuery = None,
    until: UntilQuery = None,
    kinds: KindsQuery = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> HistoryResponse:
    """The journal of the whole fleet in one feed, for audits and shift reports."""
    return await _history(api, None, since, until, kinds, limit, cursor)
