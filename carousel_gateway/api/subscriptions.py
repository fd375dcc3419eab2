"""Who wants what: an index from (feed, machine) to sessions. Pure, no I/O.

Broadcasting looks up the sessions of one machine on one feed in O(1), so the hot path
does no per-session filtering. The lookup returns a tuple cached until the subscriptions of
that machine and feed change: a broadcast neither copies nor filters, and what it got
stays valid while sessions come and go during its (sliced) writing.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Generic, TypeVar

from carousel_gateway.wire import SubscriptionType

__all__ = [
    "FEEDS_OF",
    "Feed",
    "SubscriptionIndex",
]

S = TypeVar("S")


class Feed(StrEnum):
    STATUS = "status"  # status_broadcast
    COMMANDS = "commands"  # command_result, move_completed, move_failed
    EVENTS = "events"  # machine_event


FEEDS_OF: dict[SubscriptionType, tuple[Feed, ...]] = {
    SubscriptionType.STATUS_UPDATES: (Feed.STATUS,),
    SubscriptionType.COMMAND_RESULTS: (Feed.COMMANDS,),
    SubscriptionType.ALL_EVENTS: (Feed.STATUS, Feed.COMMANDS, Feed.EVENTS),
    # Pick jobs' events are per workstation, not per machine: the WebSocket API keeps them.
    SubscriptionType.JOB_EVENTS: (),
}


class SubscriptionIndex(Generic[S]):
    """Subscriptions add up; unsubscribing removes only what it names."""

    def __init__(self) -> None:
        self._by_machine: dict[Feed, dict[str, set[S]]] = {c: {} for c in Feed}
        self._by_session: dict[S, dict[Feed, set[str]]] = {}
        self._cached: dict[Feed, dict[str, tuple[S, ...]]] = {c: {} for c in Feed}

    def add(self, session: S, kind: SubscriptionType, machine_ids: Iterable[str]) -> None:
        ids = list(machine_ids)
        own = self._by_session.setdefault(session, {})
        for feed in FEEDS_OF[kind]:
            own.setdefault(feed, set()).update(ids)
            table = self._by_machine[feed]
            cached = self._cached[feed]
            for machine_id in ids:
                table.setdefault(machine_id, set()).add(session)
                cached.pop(machine_id, None)

    def remove(self, session: S, kind: SubscriptionType, machine_ids: Iterable[str]) -> None:
        own = self._by_session.get(session)
        if own is None:
            return
        ids = list(machine_ids)
        for feed in FEEDS_OF[kind]:
            subscribed = own.get(feed, set())
            table = self._by_machine[feed]
            cached = self._cached[feed]
            for machine_id in ids:
                subscribed.discard(machine_id)
                sessions = table.get(machine_id)
                if sessions is not None:
                    sessions.discard(session)
                    cached.pop(machine_id, None)
                    if not sessions:
                        del table[machine_id]

    def drop(self, session: S) -> None:
        """Forget a session entirely (it closed)."""
        own = self._by_session.pop(session, None)
        if own is None:
            return
        for feed, machine_ids in own.items():
            table = self._by_machine[feed]
            cached = self._cached[feed]
            for machine_id in machine_ids:
                sessions = table.get(machine_id)
                if sessions is not None:
                    sessions.discard(session)
                    cached.pop(machine_id, None)
                    if not sessions:
                        del table[machine_id]

    def sessions(self, feed: Feed, machine_id: str) -> tuple[S, ...]:
        """The sessions subscribed to ``machine_id`` on ``feed``: an immutable snapshot,
        the same object until those subscriptions change."""
        cached = self._cached[feed]
        found = cached.get(machine_id)
        if found is None:
            found = cached[machine_id] = tuple(self._by_machine[feed].get(machine_id, ()))
        return found

    def machines(self, session: S, feed: Feed) -> set[str]:
        return set(self._by_session.get(session, {}).get(feed, ()))
