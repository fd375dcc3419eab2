"""Every workstation of a gateway and the rules across them (pure).

Job ids are the client's and unique across the gateway: the board finds a job's
workstation, judges a submission (``INVALID_JOB``) and its idempotency (the same id and
content again is the existing job; other content is ``JOB_CONFLICT``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from carousel_gateway.config import MachineConfig, WorkstationConfig
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.picking.jobs import Job, same_content, validate_submission
from carousel_gateway.picking.workstation import Workstation
from carousel_gateway.wire.jobs import JobState, JobSubmission

__all__ = ["JobBoard"]


class JobBoard:
    """All workstations and their jobs, addressed by job id."""

    def __init__(
        self, workstations: Iterable[WorkstationConfig], machines: Mapping[str, MachineConfig]
    ) -> None:
        self.machines = dict(machines)
        self.configs = {station.id: station for station in workstations}
        self.stations = {
            station_id: Workstation(config, self.machines)
            for station_id, config in self.configs.items()
        }
        self._station_of: dict[str, Workstation] = {}

    def station(self, workstation_id: str) -> Workstation:
        station = self.stations.get(workstation_id)
        if station is None:
            raise GatewayError(
                ErrorCode.WORKSTATION_NOT_FOUND, f"no workstation {workstation_id!r}"
            )
        return station

    def find(self, job_id: str) -> tuple[Workstation, Job]:
        station = self._station_of.get(job_id)
        if station is None:
            raise GatewayError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id!r}")
        return station, station.jobs[job_id]

    def existing(self, submission: JobSubmission) -> Job | None:
        """The job this submission repeats (``JOB_CONFLICT`` if its content differs)."""
        station = self._station_of.get(submission.job_id)
        if station is None:
            return None
        job = station.jobs[submission.job_id]
        if not same_content(job, submission):
            raise GatewayError(
                ErrorCode.JOB_CONFLICT,
                f"job {submission.job_id!r} exists with different content "
                f"(workstation {job.workstation_id}, {len(job.lines)} lines, "
                f"{job.state.value}); choose a new job_id",
            )
        return job

    def make(self, submission: JobSubmission, by: str | None, at: float) -> Job:
        """A new job from a valid submission (not added yet: the caller adds it)."""
        validate_submission(submission, self.configs, self.machines)
        station = self.stations[submission.workstation_id]
        return Job.from_submission(submission, seq=station.next_seq(), at=at, by=by)

    def add(self, job: Job, at: float) -> Workstation:
        station = self.stations[job.workstation_id]
        self._station_of[job.job_id] = station
        station.add(job, at)
        return station

    def restore(self, job: Job, reason: str | None, at: float) -> None:
        """Take back a stored job (an active one comes back paused with ``reason``; with
        None it stays active: a takeover)."""
        station = self.stations.get(job.workstation_id)
        if station is None:
            return  # its workstation left the config: the job stays in the store only
        self._station_of[job.job_id] = station
        station.restore(job, reason, at)

    def mirror(self, job: Job, at: float) -> None:
        """A standby's read-only copy of a stored job, as the active committed it."""
        station = self.stations.get(job.workstation_id)
        if station is None:
            return
        self._station_of[job.job_id] = station
        station.mirror(job, at)

    def forget_finished(self, before: float) -> int:
        """Drop jobs that ended before ``before`` from memory; returns how many."""
        count = 0
        for station in self.stations.values():
            for job_id in station.forget_finished(before):
                self._station_of.pop(job_id, None)
                count += 1
        return count

    def jobs(self, workstation_id: str | None = None, state: JobState | None = None) -> list[Job]:
        """Jobs, newest first."""
        stations = (
            [self.stations[workstation_id]]
            if workstation_id is not None and workstation_id in self.stations
            else ([] if workstation_id is not None else list(self.stations.values()))
        )
        found = [
            job
            for station in stations
            for job in station.jobs.values()
            if state is None or job.state is state
        ]
        return sorted(found, key=lambda job: (job.created_at, job.seq), reverse=True)
