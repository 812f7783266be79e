"""Human approval gates: a state of the scheduler, not a process.

A gate is a job of type ``gate`` (declared as such, or the ``hitl-gate-<job>`` that follows a job with
``hitl_message``: :func:`titan_zmq.jobspec.expand_gates`). When its parents complete it enters
AWAITING_APPROVAL, holds no worker slot and runs nothing; its deadline (``max_wait_seconds``, default
:data:`defaults.GATE_MAX_WAIT`) is journaled in ``due_at`` and sits in the scheduler's timer heap, so a
restarted broker keeps it. A decision ends it once and for all: approve -> COMPLETED (its children are
released), reject -> REJECTED, deadline -> TIMED_OUT; the last two SKIP its descendants and so fail the
run. A gate is never retried. Who decided, when (``finished_at``) and why (``comment``) are journaled with
its state. Deciding a gate that is not waiting (decided already, or not reached yet) raises
:class:`~titan_zmq.errors.GateNotPending`: the broker loop is single-threaded, so of two concurrent
decisions the second always sees the first.

The scheduler owns the records and their state changes; this module holds the gate rules and an index of
the runs that have gates, and changes state only through the :class:`Hooks` the scheduler gives it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from titan_zmq import defaults
from titan_zmq.broker.records import JobRecord, RunRecord
from titan_zmq.errors import GateNotPending, InvalidRequest
from titan_zmq.jobspec import gate_id
from titan_zmq.states import JobState

GATE_PENDING = "gate_pending"
GATE_DECIDED = "gate_decided"
RUN_FINISHED = "run_finished"


@dataclass(frozen=True, slots=True)
class Notice:
    """An event for the notification hook (sent once the change it reports is journaled)."""

    run_id: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Hooks:
    """What the gate rules need of the scheduler: its own state-changing paths, so that every change
    is journaled and counted as any job's is."""

    set_state: Callable[[RunRecord, JobRecord, JobState, float], None]
    cascade: Callable[[RunRecord, JobRecord, JobState, float], None]  # mark the descendants
    release_children: Callable[[RunRecord, JobRecord, float], None]
    timer: Callable[[JobRecord], None]  # push the record's due_at on the timer heap
    emit: Callable[[Notice], None]


def max_wait(rec: JobRecord) -> float:
    wait = rec.spec.max_wait_seconds
    return float(defaults.GATE_MAX_WAIT if wait is None else wait)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "?"


class Gates:
    """The gate rules and the index of runs with gates (run id -> gate ids in submission order)."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks
        self.by_run: dict[str, list[str]] = {}

    # ---- index ---------------------------------------------------------------------------------

    def add(self, run_id: str, recs: Iterable[JobRecord]) -> None:
        ids = [r.spec.id for r in recs if r.is_gate]
        if ids:
            self.by_run.setdefault(run_id, []).extend(ids)

    def forget(self, run_id: str) -> None:
        self.by_run.pop(run_id, None)

    def of_run(self, run: RunRecord) -> list[JobRecord]:
        return [run.jobs[g] for g in self.by_run.get(run.run_id, ()) if g in run.jobs]

    def gated(self, run: RunRecord) -> set[str]:
        """Jobs of the run followed by the gate their hitl_message made."""
        return {r.spec.depends_on[0] for r in self.of_run(run)
                if r.spec.depends_on and r.spec.id == gate_id(r.spec.depends_on[0])}

    def pending(self, run: RunRecord) -> list[str]:
        """The run's gates waiting for a decision."""
        return [r.spec.id for r in self.of_run(run) if r.state is JobState.AWAITING_APPROVAL]

    # ---- rules ---------------------------------------------------------------------------------

    def open(self, run: RunRecord, rec: JobRecord, now: float) -> None:
        """The gate's parents are done: it waits for a human, until its deadline."""
        rec.started_at = now
        rec.due_at = now + max_wait(rec)
        self.hooks.set_state(run, rec, JobState.AWAITING_APPROVAL, now)
        self.hooks.timer(rec)
        self.hooks.emit(Notice(run.run_id, self._event(GATE_PENDING, run, rec, now)))

    def restore(self, rec: JobRecord, now: float) -> None:
        """A gate still waiting after a broker restart keeps its journaled deadline."""
        if rec.due_at is None:  # a record without one (never written so): wait a full period from now
            rec.due_at = now + max_wait(rec)
        self.hooks.timer(rec)

    def decide(self, run: RunRecord, rec: JobRecord, approve: bool, by: str, comment: str | None,
               now: float) -> None:
        """A human's decision; GateNotPending unless the gate is waiting for one."""
        self.check_waiting(run, rec)
        rec.decided_by, rec.comment = by, comment
        self._end(run, rec, JobState.COMPLETED if approve else JobState.REJECTED, now)

    def expire(self, run: RunRecord, rec: JobRecord, now: float) -> None:
        """The deadline passed without a decision."""
        rec.comment = f"no decision within {max_wait(rec):g}s"
        self._end(run, rec, JobState.TIMED_OUT, now)

    @staticmethod
    def check_waiting(run: RunRecord, rec: JobRecord) -> None:
        where = f"gate {rec.spec.id!r} of run {run.run_id}"
        if not rec.is_gate:
            raise InvalidRequest(f"job {rec.spec.id!r} of run {run.run_id} is not a gate")
        if rec.state is JobState.AWAITING_APPROVAL:
            return
        view = rec.gate_view()
        if view["decision"] is not None:
            who = f" by {rec.decided_by}" if rec.decided_by else ""
            raise GateNotPending(f"{where} was already decided: {view['decision']}{who}"
                                 f" at {_when(rec.finished_at)}")
        if rec.state.terminal:
            raise GateNotPending(f"{where} will never wait for a decision: it is {rec.state.value}")
        raise GateNotPending(f"{where} is not waiting for a decision yet: it is {rec.state.value}"
                             " (its parents are not done)")

    def _end(self, run: RunRecord, rec: JobRecord, state: JobState, now: float) -> None:
        rec.finished_at = now
        # the notice goes before the state change, which may finish the run (run_finished comes after)
        event = self._event(GATE_DECIDED, run, rec, now)
        event.update(state=state.value, decision=_decision(state), decided_by=rec.decided_by,
                     decided_at=now, comment=rec.comment)
        self.hooks.emit(Notice(run.run_id, event))
        self.hooks.set_state(run, rec, state, now)
        if state is JobState.COMPLETED:
            self.hooks.release_children(run, rec, now)
        else:
            self.hooks.cascade(run, rec, JobState.SKIPPED, now)

    @staticmethod
    def _event(kind: str, run: RunRecord, rec: JobRecord, now: float) -> dict[str, Any]:
        return {"event": kind, "time": now, "run_id": run.run_id, "run_name": run.name,
                "agent_run_id": run.agent_run_id, "gate_id": rec.spec.id, "message": rec.spec.hitl_message,
                "waiting_since": rec.started_at, "deadline": rec.due_at}

    # ---- queries -------------------------------------------------------------------------------

    def listing(self, runs: Mapping[str, RunRecord], run_id: str | None = None,
                limit: int = defaults.GATES_PAGE) -> list[dict[str, Any]]:
        """Gates waiting for a decision (the longest waiting first), then decided ones (the latest first,
        at most ``limit``); gates not reached yet, and gates skipped before they waited, are left out."""
        ids = [run_id] if run_id is not None else list(self.by_run)
        waiting: list[dict[str, Any]] = []
        decided: list[dict[str, Any]] = []
        for rid in ids:
            run = runs.get(rid)
            if run is None:
                continue
            for rec in self.of_run(run):
                view = {"run_id": run.run_id, "run_name": run.name, "agent_run_id": run.agent_run_id,
                        **rec.gate_view()}
                if rec.state is JobState.AWAITING_APPROVAL:
                    waiting.append(view)
                elif view["decision"] is not None:
                    decided.append(view)
        waiting.sort(key=_by("waiting_since"))
        decided.sort(key=_by("decided_at"), reverse=True)
        return waiting + decided[:limit]


def _by(name: str) -> Callable[[dict[str, Any]], float]:
    return lambda view: float(view.get(name) or 0.0)


def _decision(state: JobState) -> str:
    return {JobState.COMPLETED: "approved", JobState.REJECTED: "rejected"}.get(state, "timed_out")
