"""Job and run states (str Enums, so they travel and print as plain text)."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "PENDING"  # waiting for its parents
    DELAYED = "DELAYED"  # parents done; waiting for its delay (or a retry backoff) to pass
    QUEUED = "QUEUED"  # ready, waiting for a capable worker with a free slot
    RUNNING = "RUNNING"  # an attempt is assigned to a worker
    COMPLETED = "COMPLETED"  # an attempt exited 0
    FAILED = "FAILED"  # an attempt failed; a retry is scheduled
    DEAD = "DEAD"  # retries exhausted
    CANCELLED = "CANCELLED"  # cancelled by a user (directly or through an ancestor)
    SKIPPED = "SKIPPED"  # an upstream job died or was cancelled, so this one never ran
    AWAITING_APPROVAL = "AWAITING_APPROVAL"  # a gate waiting for a human decision (holds no worker slot)
    REJECTED = "REJECTED"  # a gate a human refused: never retried, its downstream SKIPPED
    TIMED_OUT = "TIMED_OUT"  # a gate nobody decided before its deadline: as REJECTED
    # services (type: service); a service that crash-loops ends FAILED, which is then final (see JobRecord.terminal)
    STARTING = "STARTING"  # a service's process was dispatched or started; its health check has not passed yet
    READY = "READY"  # a service's health check passed (its children may start)
    RESTARTING = "RESTARTING"  # a service's process exited; it starts again after its backoff
    STOPPED = "STOPPED"  # a service stopped on purpose (titan stop); never restarted

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_JOB_STATES


TERMINAL_JOB_STATES = frozenset({JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED, JobState.SKIPPED,
                                 JobState.REJECTED, JobState.TIMED_OUT, JobState.STOPPED})
# ends that fail the run and skip the job's downstream (CANCELLED cancels it instead)
FAILED_JOB_STATES = frozenset({JobState.DEAD, JobState.SKIPPED, JobState.REJECTED, JobState.TIMED_OUT})
# an attempt holds a worker slot and has a process (or is about to): a job RUNNING, a service STARTING or READY
ACTIVE_JOB_STATES = frozenset({JobState.RUNNING, JobState.STARTING, JobState.READY})


class RunState(StrEnum):
    RUNNING = "RUNNING"  # at least one job is not finished
    SUCCEEDED = "SUCCEEDED"  # every job COMPLETED
    FAILED = "FAILED"  # a job ended DEAD, or a gate REJECTED or TIMED_OUT (their downstream SKIPPED)
    CANCELLED = "CANCELLED"  # a job or the whole run was cancelled

    @property
    def terminal(self) -> bool:
        return self is not RunState.RUNNING
