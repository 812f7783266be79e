"""The scheduler's read side: every question the broker and its handlers may ask of it.

A mixin of :class:`titan_zmq.broker.scheduler.Scheduler`, apart so the state machine stays readable:
nothing here changes state (the scheduler's rule: state changes only through its event methods).
"""

from __future__ import annotations

from typing import Any

from titan_zmq import defaults
from titan_zmq.attempt import AttemptKey
from titan_zmq.broker import agents
from titan_zmq.broker.agents import AgentRuns
from titan_zmq.broker.dispatch import ReadyQueues, WorkerSlots
from titan_zmq.broker.gates import Gates
from titan_zmq.broker.records import JobRecord, RunOrder, RunRecord
from titan_zmq.errors import NotFound
from titan_zmq.states import JobState


class SchedulerQueries:
    """Queries over the scheduler's runs, workers and queues."""

    runs: dict[str, RunRecord]
    order: RunOrder
    workers: dict[str, WorkerSlots]
    ready: ReadyQueues
    timers: list[tuple[float, int, str, str]]
    gates: Gates
    agents: AgentRuns
    service_keys: dict[tuple[str, str], None]

    def _current(self, name: str, key: AttemptKey) -> JobRecord | None:
        raise NotImplementedError  # the scheduler's

    def run(self, run_id: str) -> RunRecord:
        try:
            return self.runs[run_id]
        except KeyError:
            raise NotFound(f"unknown run id {run_id!r}") from None

    def job(self, run_id: str, job_id: str) -> JobRecord:
        run = self.run(run_id)
        try:
            return run.jobs[job_id]
        except KeyError:
            raise NotFound(f"run {run_id!r} has no job {job_id!r}") from None

    def find_run(self, run_id: str) -> RunRecord | None:
        return self.runs.get(run_id)

    def has_job(self, run_id: str, job_id: str) -> bool:
        run = self.runs.get(run_id)
        return run is not None and job_id in run.jobs

    def newest_run(self) -> RunRecord:
        if not self.runs:
            raise NotFound("no runs yet")
        return self.runs[next(reversed(self.runs))]

    def recent_runs(self, limit: int, agent_run_id: str | None = None, before: str | None = None) -> list[RunRecord]:
        """Newest first (without sorting every run ever seen), optionally one agent run's only, and
        optionally only runs submitted before the run ``before`` (the cursor of the previous page)."""
        if before is not None and before not in self.order:
            raise NotFound(f"unknown run id {before!r} (it may have left under retention): list from the newest")
        out: list[RunRecord] = []
        for run_id in self.order.newest_first(before):
            if len(out) >= limit:
                break
            run = self.runs[run_id]
            if agent_run_id is None or run.agent_run_id == agent_run_id:
                out.append(run)
        return out

    def running_on(self, worker: str) -> list[AttemptKey]:
        """The attempts a worker holds a slot for, sorted."""
        w = self.workers.get(worker)
        return sorted(w.running) if w is not None else []

    def current_attempt(self, worker: str, key: AttemptKey) -> JobRecord | None:
        """The job record if ``key`` is its current, running attempt on ``worker`` (else None: overtaken)."""
        return self._current(worker, key)

    def holds(self, worker: str, key: AttemptKey) -> bool:
        """Whether ``worker`` holds a slot for attempt ``key``: from its dispatch until the worker's report
        of its end (a cancelled attempt keeps its slot until then, so its last output still counts)."""
        w = self.workers.get(worker)
        return w is not None and (key in w.running or key in w.finishing)

    def job_counts(self) -> dict[str, int]:
        """How many jobs of all runs are in each state."""
        counts: dict[str, int] = {}
        for run in self.runs.values():
            for rec in run.jobs.values():
                counts[rec.state.value] = counts.get(rec.state.value, 0) + 1
        return counts

    def run_counts(self) -> tuple[int, int]:
        """(runs known, runs still running)."""
        return len(self.runs), sum(1 for r in self.runs.values() if not r.state.terminal)

    def next_due(self) -> float | None:
        return self.timers[0][0] if self.timers else None

    def queued_by_capability(self) -> dict[str, int]:
        """How many jobs wait in QUEUED for each capability tag (a job pinned by affinity counts under
        its requirement too)."""
        counts: dict[str, int] = {}
        for run in self.runs.values():
            for rec in run.jobs.values():
                if rec.state is JobState.QUEUED:
                    counts[rec.spec.requirement] = counts.get(rec.spec.requirement, 0) + 1
        return counts

    def queue_figures(self, now: float) -> dict[str, dict[str, float | int]]:
        """Per capability: jobs queued, how long the oldest has waited, and the slots of the capable
        workers that take new jobs (all and free). What the autoscaler reads (``titan stats``)."""
        out: dict[str, dict[str, float | int]] = {}

        def row(cap: str) -> dict[str, float | int]:
            return out.setdefault(cap, {"queued": 0, "oldest_wait": 0.0, "slots": 0, "free_slots": 0, "workers": 0})

        for _cap, entry in self.ready.live_entries():
            rec = self.runs[entry[2]].jobs[entry[3]]
            r = row(rec.spec.requirement)
            r["queued"] += 1
            r["oldest_wait"] = max(r["oldest_wait"], now - (rec.queued_at if rec.queued_at is not None else now))
        for w in self.workers.values():
            if w.draining:
                continue
            for cap in w.caps:
                if cap.startswith("@"):
                    continue
                r = row(cap)
                r["workers"] += 1
                r["slots"] += w.slots
                r["free_slots"] += max(0, w.free)
        return out

    def draining(self, worker: str) -> bool:
        w = self.workers.get(worker)
        return w is not None and w.draining

    def queued_count(self) -> int:
        return sum(1 for r in self.runs.values() for j in r.jobs.values() if j.state is JobState.QUEUED)

    def gates_list(self, run_id: str | None = None, limit: int = defaults.GATES_PAGE) -> list[dict[str, Any]]:
        """Gates waiting for a decision, then decided ones (of one run, or of every run)."""
        if run_id is not None:
            self.run(run_id)  # NotFound
        return self.gates.listing(self.runs, run_id, limit)

    def gated_jobs(self, run_id: str) -> set[str]:
        """Jobs of a run followed by the gate their hitl_message made (jobs added later wait for the gate)."""
        return self.gates.gated(self.run(run_id))

    def agent_runs(self, limit: int = defaults.AGENT_RUNS_PAGE) -> list[dict[str, Any]]:
        """Every agent run (runs grouped by agent_run_id), the most recently active first."""
        return self.agents.summaries(self.runs, limit)

    def agent_run(self, agent_run_id: str, now: float) -> dict[str, Any]:
        """One agent run with its stages in submission order; O(its runs)."""
        stages = self.agents.stages(self.runs, agent_run_id)
        return agents.detail(agent_run_id, stages, self.gates.pending, now)

    def services(self) -> list[JobRecord]:
        """Every known service's record, oldest first (see :mod:`.services`)."""
        out = []
        for run_id, job_id in list(self.service_keys):
            run = self.runs.get(run_id)
            rec = run.jobs.get(job_id) if run else None
            if rec is None:
                del self.service_keys[run_id, job_id]  # its run left (retention) or was discarded
            else:
                out.append(rec)
        return out
