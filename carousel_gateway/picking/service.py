"""What the APIs ask of pick jobs: the one seam between the job engine and its clients.

The WebSocket API, REST, the dashboard and the north interfaces depend on this protocol
only; ``app.py`` hands them the engine that implements it. Every method raises
:class:`~carousel_gateway.errors.GatewayError` with a code from the table when it refuses
(``INVALID_JOB`` naming each bad line and why, ``JOB_NOT_FOUND``, ``JOB_CONFLICT``,
``INVALID_COMMAND`` for a confirmation or control the job's state does not allow), and
returns the wire views clients see, so that every API shows a job the same way.
Writes return only after they are journalled (a SIGKILL loses no acknowledged write).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from carousel_gateway.wire.jobs import (
    JobEventMessage,
    JobState,
    JobSubmission,
    JobView,
    WorkstationView,
)

__all__ = ["JobEventListener", "JobService", "Unsubscribe"]

#: Called synchronously for each job event, in order; it must only do quick work.
JobEventListener = Callable[[JobEventMessage], None]
Unsubscribe = Callable[[], None]


class JobService(Protocol):
    """Jobs and workstations, as every API sees them. ``by`` names who asked (a token
    name or a peer address), for the journal and for ``confirmed_by``."""

    async def submit(self, submission: JobSubmission, by: str) -> tuple[JobView, bool]:
        """Queue a job; ``(job, True)`` when created, ``(existing, False)`` for the same
        ``job_id`` with the same content; ``JOB_CONFLICT`` with different content."""
        ...

    def jobs(
        self, workstation_id: str | None = None, state: JobState | None = None
    ) -> list[JobView]:
        """Jobs, newest first, optionally of one workstation and in one state."""
        ...

    def job(self, job_id: str) -> JobView:
        """One job (``JOB_NOT_FOUND``)."""
        ...

    async def confirm(
        self,
        job_id: str,
        line_id: str,
        quantity_picked: int,
        reason: str | None,
        by: str,
        *,
        confirmation_id: str | None = None,
    ) -> JobView:
        """Confirm a presented line: ``quantity_picked`` in 0..quantity, a ``reason`` when
        less than asked (a short pick). The carousel moves on once its stop is done. A
        retry of a stored confirmation (the same ``confirmation_id``; without one, the same
        quantity and reason) returns the job with the stored result; the same id with
        other content is ``JOB_CONFLICT``."""
        ...

    async def pause(self, job_id: str, by: str, reason: str | None = None) -> JobView:
        """Pause a job: its carousels accept manual moves again; nothing moves for it."""
        ...

    async def resume(self, job_id: str, by: str) -> JobView:
        """Resume a paused job: re-planned from a fresh reading of each carousel."""
        ...

    async def cancel(self, job_id: str, by: str, reason: str | None = None) -> JobView:
        """Cancel a job: its open lines become ``cancelled``; nothing moves for it."""
        ...

    def workstations(self) -> list[WorkstationView]:
        """Every workstation with its presented stops, queue and route."""
        ...

    def workstation(self, workstation_id: str) -> WorkstationView:
        """One workstation (``WORKSTATION_NOT_FOUND``; a job submitted to an unknown one is
        ``INVALID_JOB``)."""
        ...

    def listen(self, listener: JobEventListener) -> Unsubscribe:
        """Receive every job event from now on; call the result to stop."""
        ...
