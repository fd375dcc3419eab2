"""Who wants what: an index from (channel, machine) to sessions. Pure, no I/O.

Broadcasting looks up the sessions of one machine on one channel in O(1), so the hot path
does no per-session filtering. The lookup returns a tuple cached until the subscriptions of
that machine and channel change: a broadcast neither copies nor filters, and what it got
stays valid while sessions come and go during its (sliced) writing.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Generic, TypeVar

from carousel_gateway.wire import SubscriptionType

S = TypeVar("S")


class Channel(StrEnum):
    STATUS = "status"  # status_broadcast
    COMMANDS = "commands"  # command_result, move_completed, move_failed
    EVENTS = "events"  # machine_event


CHANNELS_OF: dict[SubscriptionType, tuple[Channel, ...]] = {
    SubscriptionType.STATUS_UPDATES: (Channel.STATUS,),
    SubscriptionType.COMMAND_RESULTS: (Channel.COMMANDS,),
    SubscriptionType.ALL_EVENTS: (Channel.STATUS, Channel.COMMANDS, Channel.EVENTS),
}


class SubscriptionIndex(Generic[S]):
    """Subscriptions add up; unsubscribing removes only what it names."""

    def __init__(self) -> None:
        self._by_machine: dict[Channel, dict[str, set[S]]] = {c: {} for c in Channel}
        self._by_session: dict[S, dict[Channel, set[str]]] = {}
        self._cached: dict[Channel, dict[str, tuple[S, ...]]] = {c: {} for c in Channel}

    def add(self, session: S, kind: SubscriptionType, machine_ids: Iterable[str]) -> None:
        ids = list(machine_ids)
        own = self._by_session.setdefault(session, {})
        for channel in CHANNELS_OF[kind]:
            own.setdefault(channel, set()).update(ids)
            table = self._by_machine[channel]
            cached = self._cached[channel]
            for machine_id in ids:
                table.setdefault(machine_id, set()).add(session)
                cached.pop(machine_id, None)

    def remove(self, session: S, kind: SubscriptionType, machine_ids: Iterable[str]) -> None:
        own = self._by_session.get(session)
        if own is None:
            return
        ids = list(machine_ids)
        for channel in CHANNELS_OF[kind]:
            subscribed = own.get(channel, set())
            table = self._by_machine[channel]
            cached = self._cached[channel]
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
        for channel, machine_ids in own.items():
            table = self._by_machine[channel]
            cached = self._cached[channel]
            for machine_id in machine_ids:
                sessions = table.get(machine_id)
                if sessions is not None:
                    sessions.discard(session)
                    cached.pop(machine_id, None)
                    if not sessions:
                        del table[machine_id]

    def sessions(self, channel: Channel, machine_id: str) -> tuple[S, ...]:
        """The sessions subscribed to ``machine_id`` on ``channel``: an immutable snapshot,
        the same object until those subscriptions change."""
        cached = self._cached[channel]
        found = cached.get(machine_id)
        if found is None:
            found = cached[machine_id] = tuple(self._by_machine[channel].get(machine_id, ()))
        return found

    def machines(self, session: S, channel: Channel) -> set[str]:
        return set(self._by_session.get(session, {}).get(channel, ()))
