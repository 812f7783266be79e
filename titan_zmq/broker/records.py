"""The broker's mutable records of runs and jobs, and their journal form."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from titan_zmq.jobspec import JobSpec
from titan_zmq.states import JobState, RunState

# Fields of a job record that change over its life (the spec is journaled once, apart).
# The log flags and a gate's decision are journaled only once set (most jobs never set them: fewer bytes
# per record). A gate keeps its waiting time in ``started_at``, its deadline in ``due_at`` and the time of
# its decision in ``finished_at``; ``decided_by`` and ``comment`` say who decided and why.
JOB_STATE_FIELDS = (
    "state", "attempts", "failures", "worker", "exit_code", "error",
    "dispatched_at", "started_at", "finished_at", "due_at", "log_truncated", "log_incomplete", "history",
    "decided_by", "comment", "service", "restarts",
)
OPTIONAL_FIELDS = ("log_truncated", "log_incomplete", "history", "decided_by", "comment", "service",
                   "restarts")  # left out unless set
# An earlier attempt, as journaled in ``history``: [attempt, worker, dispatched_at, started_at, finished_at,
# exit_code, error, outcome] (a list: most jobs have none, and those that do keep the journal small).
ATTEMPT_FIELDS = ("attempt", "worker", "dispatched_at", "started_at", "finished_at", "exit_code", "error", "outcome")
MAX_HISTORY = 50  # earlier attempts kept per job (the oldest go first); `attempts` still counts them all

LOG_FLAGS = ("log_truncated", "log_incomplete")
# a gate's end as a decision (a gate SKIPPED before it waited has none)
GATE_DECISIONS = {JobState.COMPLETED.value: "approved", JobState.REJECTED.value: "rejected",
                  JobState.TIMED_OUT.value: "timed_out", JobState.CANCELLED.value: "cancelled"}


@dataclass(slots=True, eq=False)
class JobRecord:
    """One job of a run as the broker tracks it: its spec and its changing state."""

    run_id: str
    spec: JobSpec
    seq: int  # submission order
    state: JobState = JobState.PENDING
    attempts: int = 0  # attempts dispatched so far
    failures: int = 0  # attempts that ended non-zero
    worker: str | None = None  # worker of the current / last attempt
    exit_code: int | None = None
    error: str | None = None
    dispatched_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    due_at: float | None = None  # DELAYED / FAILED: when it goes back to the queue
    log_truncated: bool = False  # its log passed the broker's --max-log-bytes: later lines were dropped
    log_incomplete: bool = False  # the broker could not write some of its lines (a full disk)
    history: list[list[Any]] = field(default_factory=list)  # earlier attempts (ATTEMPT_FIELDS), oldest first
    decided_by: str | None = None  # a gate: who approved or rejected it
    comment: str | None = None  # a gate: the approval's comment, the rejection's reason, or why it timed out
    service: dict[str, Any] | None = None  # a READY service's address: host, port, pid, ready_at (services.py)
    restarts: int = 0  # a service's restarts after an exit (titan restart and re-placements not counted)
    queue_seq: int = 0  # FIFO order among equal priorities; identifies the live queue entry
    queued_at: float | None = None  # when it last became QUEUED (not journaled: a restart counts from then)
    children: list[str] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in JOB_STATE_FIELDS}
        out["state"] = self.state.value
        for flag in OPTIONAL_FIELDS:
            if not out[flag]:
                del out[flag]
        return out

    def end_attempt(self, outcome: str, now: float | None = None) -> None:
        """File the current attempt under ``history`` (it ended and another may follow); ``now``
        closes an attempt whose end the broker saw without an exit (a lost worker)."""
        if self.attempts == 0 or (self.history and self.history[-1][0] == self.attempts):
            return
        finished = self.finished_at if now is None else now
        self.history.append([self.attempts, self.worker, self.dispatched_at, self.started_at, finished,
                             self.exit_code, self.error, outcome])
        del self.history[:-MAX_HISTORY]

    @property
    def terminal(self) -> bool:
        """Whether the job is over: a terminal state, or FAILED for a service (a crash loop is final,
        where a job's FAILED waits for its retry)."""
        return self.state.terminal or (self.state is JobState.FAILED and self.spec.type == "service")

    def attempts_log(self) -> list[dict[str, Any]]:
        """Every attempt, oldest first, the current one last: who ran it, when, and how it ended."""
        out = [dict(zip(ATTEMPT_FIELDS, entry, strict=False)) for entry in self.history]
        if self.attempts and not (self.history and self.history[-1][0] == self.attempts):
            out.append({"attempt": self.attempts, "worker": self.worker, "dispatched_at": self.dispatched_at,
                        "started_at": self.started_at, "finished_at": self.finished_at,
                        "exit_code": self.exit_code, "error": self.error, "outcome": self.state.value})
        return out

    def status(self, spec: bool = False) -> dict[str, Any]:
        """The public view (``titan status --json``); with ``spec``, the job's spec too (its wire form,
        what a submission of it again takes)."""
        out: dict[str, Any] = {
            "state": self.state.value,
            "attempts": self.attempts,
            "worker": self.worker,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "priority": self.spec.priority,
            "requirement": self.spec.requirement,
            "depends_on": list(self.spec.depends_on),
            "error": self.error,
            "log_truncated": self.log_truncated,
            "log_incomplete": self.log_incomplete,
            "attempts_log": self.attempts_log(),
            **({"gate": self.gate_view()} if self.spec.type == "gate" else {}),
            **({"type": "service", "service": self.service, "restarts": self.restarts}
               if self.spec.type == "service" else {}),
        }
        if spec:
            out["spec"] = self.spec.to_wire()
        return out

    @property
    def is_gate(self) -> bool:
        return self.spec.type == "gate"

    def gate_view(self) -> dict[str, Any]:
        """A gate's question, wait and decision (``titan gates``); ``decision`` is None while undecided."""
        return {
            "gate_id": self.spec.id, "message": self.spec.hitl_message, "state": self.state.value,
            "waiting_since": self.started_at, "deadline": self.due_at,
            "decision": GATE_DECISIONS.get(self.state.value) if self.started_at is not None else None,
            "decided_by": self.decided_by, "decided_at": self.finished_at if self.state.terminal else None,
            "comment": self.comment, "depends_on": list(self.spec.depends_on),
        }


@dataclass(slots=True, eq=False)
class RunRecord:
    """One run: its meta, its jobs in submission order, and counters the scheduler keeps up to date."""

    run_id: str
    name: str
    created_at: float
    agent_run_id: str | None = None
    state: RunState = RunState.RUNNING
    finished_at: float | None = None
    schedule: str | None = None  # the schedule that fired this run, if any
    tick: float | None = None  # the cron tick it was fired for (a run-now: the time it was asked for)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    open_jobs: int = 0  # jobs not yet terminal
    failed: int = 0  # jobs ended DEAD or SKIPPED
    cancelled: int = 0  # jobs ended CANCELLED

    def meta(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "name": self.name, "agent_run_id": self.agent_run_id,
            "state": self.state.value, "created_at": self.created_at, "finished_at": self.finished_at,
            "schedule": self.schedule, "tick": self.tick,
        }

    def summary(self) -> dict[str, Any]:
        """The run without its jobs: how many there are and how many are in each state."""
        counts: dict[str, int] = {}
        for j in self.jobs.values():
            counts[j.state.value] = counts.get(j.state.value, 0) + 1
        return {**self.meta(), "jobs": len(self.jobs), "counts": counts}

    def status(self, specs: bool = False, job_ids: list[str] | None = None) -> dict[str, Any]:
        """The run and its jobs (only ``job_ids`` when given), each with its spec when ``specs``."""
        jobs = self.jobs if job_ids is None else {j: self.jobs[j] for j in job_ids}
        return {**self.meta(), "jobs": {jid: rec.status(specs) for jid, rec in jobs.items()}}


class RunOrder:
    """Run ids in submission order, each with its position, so a page of runs newest first can start
    after any run without walking every newer one (``titan runs --all`` over a long history)."""

    def __init__(self) -> None:
        self._ids: list[str | None] = []  # None: a run that left (squeezed out once they are half)
        self._pos: dict[str, int] = {}

    def add(self, run_id: str) -> None:
        self._pos[run_id] = len(self._ids)
        self._ids.append(run_id)

    def remove(self, run_id: str) -> None:
        i = self._pos.pop(run_id, None)
        if i is None:
            return
        self._ids[i] = None
        if len(self._ids) > 64 and 2 * len(self._pos) < len(self._ids):
            self._ids = [r for r in self._ids if r is not None]
            self._pos = {r: i for i, r in enumerate(self._ids) if r is not None}

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._pos

    def newest_first(self, before: str | None = None) -> Iterator[str]:
        """Run ids from the newest (or from the one submitted just before ``before``) to the oldest."""
        start = len(self._ids) if before is None else self._pos[before]
        for i in range(start - 1, -1, -1):
            run_id = self._ids[i]
            if run_id is not None:
                yield run_id
