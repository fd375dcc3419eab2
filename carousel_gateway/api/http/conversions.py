"""Fleet events → REST models: a command as accepted, a move's outcome."""

from __future__ import annotations

from carousel_gateway.api.conversions import main_reason
from carousel_gateway.api.http.models import CommandData, MoveOutcome
from carousel_gateway.fleet.events import CommandAccepted, MoveCompleted, MoveFailed
from carousel_gateway.wire import (
    utc_timestamp,
)

__all__ = [
    "command_data",
    "move_outcome",
    "outcome_of",
]


def command_data(accepted: CommandAccepted) -> CommandData:
    return CommandData(
        command_sent=accepted.command,
        argument=accepted.argument,
        result=accepted.result,
        skipped=accepted.skipped,
        command_id=accepted.command_id,
    )


def move_outcome(
    event: MoveCompleted | MoveFailed | None, accepted: CommandAccepted
) -> MoveOutcome:
    """A move's outcome; ``None`` is a skipped move (the carousel already stood there)."""
    if event is None:
        target = accepted.argument if accepted.argument is not None else 0
        return MoveOutcome(
            state="arrived",
            command_id=accepted.command_id,
            target=target,
            position=target,
            duration_s=0.0,
            timestamp=utc_timestamp(accepted.at),
        )
    return outcome_of(event)


def outcome_of(event: MoveCompleted | MoveFailed) -> MoveOutcome:
    if isinstance(event, MoveCompleted):
        return MoveOutcome(
            state="arrived",
            command_id=event.command_id,
            target=event.position,
            position=event.position,
            duration_s=round(event.duration_s, 3),
            timestamp=utc_timestamp(event.at),
        )
    return MoveOutcome(
        state="failed",
        command_id=event.command_id,
        target=event.target,
        position=event.position,
        reason=main_reason(event.reasons),
        reasons=list(event.reasons),
        duration_s=round(event.duration_s, 3),
        timestamp=utc_timestamp(event.at),
    )
