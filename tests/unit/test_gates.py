"""Approval gates in the scheduler harness (every change journaled, invariants checked after each event),
their declaration in the schema, their journal form, and the agent-run index."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_scheduler import Harness, dispatched, of, spec
from titan_zmq import defaults
from titan_zmq.attempt import AttemptKey
from titan_zmq.broker import recovery
from titan_zmq.broker.actions import Journal, RunFinished
from titan_zmq.broker.gates import GATE_DECIDED, GATE_PENDING, Notice
from titan_zmq.broker.records import JOB_STATE_FIELDS, JobRecord, RunRecord
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.errors import GateNotPending, InvalidRequest, NotFound
from titan_zmq.jobspec import JobSpec, expand_gates, parse_job, parse_jobs
from titan_zmq.protocol import pack
from titan_zmq.states import JobState as J
from titan_zmq.states import RunState


def gate(id: str, *parents: str, wait: float | None = 60.0, **kw: Any) -> JobSpec:
    return JobSpec(id=id, type="gate", hitl_message=f"{id}?", max_wait_seconds=wait, depends_on=list(parents), **kw)


class GateHarness(Harness):
    def decide(self, run_id: str, job_id: str, approve: bool, by: str = "alice", comment: str | None = "ok",
               now: float = 0.0) -> list:
        return self._call("decide_gate", run_id, job_id, approve, by, comment, now)


@pytest.fixture
def h() -> GateHarness:
    return GateHarness()


def a_gate_b(h: GateHarness, wait: float | None = 60.0) -> None:
    h.worker("w", slots=1)
    h.submit("r", [spec("a"), gate("g", "a", wait=wait), spec("b", "g")])
    h.finish("r", "a", now=10.0)


def notices(actions: list, kind: str) -> list[dict[str, Any]]:
    return [n.event for n in of(actions, Notice) if n.event["event"] == kind]


# ---- waiting ----------------------------------------------------------------------------------------


def test_a_waiting_gate_holds_no_slot_and_runs_nothing(h: GateHarness) -> None:
    a_gate_b(h)
    rec = h.s.job("r", "g")
    assert rec.state is J.AWAITING_APPROVAL and rec.attempts == 0 and rec.worker is None
    assert rec.started_at == 10.0 and rec.due_at == 70.0 and h.s.next_due() == 70.0
    assert h.s.workers["w"].running == set()
    acts = h.submit("other", [spec("x1"), spec("x2")], now=11.0)  # the one slot is free for other work
    assert dispatched(acts) == [("w", "other", "x1", 1)]
    acts = h.finish("other", "x1", now=12.0)
    assert dispatched(acts) == [("w", "other", "x2", 1)]
    assert h.st("r", "b") is J.PENDING


def test_the_gate_pending_notice_waits_for_the_journal(h: GateHarness) -> None:
    h.worker("w")
    h.submit("r", [spec("a"), gate("g", "a")])
    acts = h.finish("r", "a", now=5.0)
    assert Journal("r", "g") in acts
    [event] = notices(acts, GATE_PENDING)
    assert event["gate_id"] == "g" and event["message"] == "g?" and event["deadline"] == 65.0


def test_approve_completes_the_gate_and_releases_its_children(h: GateHarness) -> None:
    a_gate_b(h)
    acts = h.decide("r", "g", True, by="alice", comment="lgtm", now=20.0)
    rec = h.s.job("r", "g")
    assert rec.state is J.COMPLETED and rec.decided_by == "alice" and rec.comment == "lgtm"
    assert rec.finished_at == 20.0 and rec.attempts == 0
    assert dispatched(acts) == [("w", "r", "b", 1)]
    [event] = notices(acts, GATE_DECIDED)
    assert event["decision"] == "approved" and event["decided_by"] == "alice" and event["comment"] == "lgtm"
    view = rec.gate_view()
    assert view["decision"] == "approved" and view["decided_at"] == 20.0 and view["waiting_since"] == 10.0
    h.finish("r", "b", now=21.0)
    assert h.run_state("r") is RunState.SUCCEEDED


@pytest.mark.parametrize("how", ["reject", "timeout"])
def test_reject_and_timeout_end_the_gate_skip_downstream_and_fail_the_run(h: GateHarness, how: str) -> None:
    h.worker("w", slots=1)
    h.submit("r", [spec("a"), gate("g", "a", wait=3.0), spec("b", "g"), spec("c", "b"), spec("side")])
    h.finish("r", "a", now=10.0)
    h.finish("r", "side", now=11.0)
    if how == "reject":
        acts = h.decide("r", "g", False, by="bob", comment="too risky", now=12.0)
        state, decision = J.REJECTED, "rejected"
    else:
        assert not of(h.tick(12.9), Notice)  # not before the deadline
        acts = h.tick(13.0)
        state, decision = J.TIMED_OUT, "timed_out"
    rec = h.s.job("r", "g")
    assert rec.state is state and rec.attempts == 0 and rec.failures == 0
    assert h.st("r", "b") is J.SKIPPED and h.st("r", "c") is J.SKIPPED
    assert h.run_state("r") is RunState.FAILED
    kinds = [type(a).__name__ if not isinstance(a, Notice) else a.event["event"] for a in acts
             if isinstance(a, Notice | RunFinished)]
    assert kinds == [GATE_DECIDED, "RunFinished"]  # the decision is told before the run's end
    assert rec.gate_view()["decision"] == decision
    assert h.s.next_due() is None or not of(h.tick(1e9), Journal)  # no second waiting period, no retry
    assert rec.state is state


def test_a_decision_on_a_gate_that_is_not_waiting_is_a_clear_error(h: GateHarness) -> None:
    h.worker("w", slots=1)
    h.submit("r", [spec("a"), gate("g", "a"), spec("b", "g")])
    with pytest.raises(GateNotPending, match="not waiting for a decision yet: it is PENDING"):
        h.decide("r", "g", True)
    with pytest.raises(InvalidRequest, match="'a' of run r is not a gate"):
        h.decide("r", "a", True)
    with pytest.raises(NotFound):
        h.decide("r", "nope", True)
    h.finish("r", "a", now=1.0)
    h.decide("r", "g", False, by="bob", comment="no", now=2.0)
    with pytest.raises(GateNotPending, match="already decided: rejected by bob"):
        h.decide("r", "g", True, by="alice")
    with pytest.raises(GateNotPending, match="already decided"):
        h.decide("r", "g", False)
    assert h.s.job("r", "g").decided_by == "bob"  # the first decision stands


def test_a_gate_whose_parent_died_never_waits(h: GateHarness) -> None:
    h.worker("w")
    h.submit("r", [spec("a", retries=0), gate("g", "a"), spec("b", "g")])
    h.finish("r", "a", code=1)
    assert h.st("r", "g") is J.SKIPPED and h.st("r", "b") is J.SKIPPED
    with pytest.raises(GateNotPending, match="never wait"):
        h.decide("r", "g", True)
    assert h.s.gates_list() == []


def test_cancelling_a_waiting_gate_cancels_downstream_and_its_deadline_is_ignored(h: GateHarness) -> None:
    a_gate_b(h)
    h.cancel("r", None, now=20.0)
    assert h.st("r", "g") is J.CANCELLED and h.st("r", "b") is J.CANCELLED
    assert not of(h.tick(1000.0), Journal)
    [view] = h.s.gates_list()
    assert view["decision"] == "cancelled"


def test_a_gate_with_a_delay_waits_after_it(h: GateHarness) -> None:
    h.worker("w")
    h.submit("r", [spec("a"), gate("g", "a", delay=5.0)])
    h.finish("r", "a", now=1.0)
    assert h.st("r", "g") is J.DELAYED
    h.tick(6.0)
    assert h.st("r", "g") is J.AWAITING_APPROVAL and h.s.job("r", "g").due_at == 66.0


def test_default_deadline_is_48_hours(h: GateHarness) -> None:
    a_gate_b(h, wait=None)
    assert h.s.job("r", "g").due_at == 10.0 + defaults.GATE_MAX_WAIT == 10.0 + 172800


# ---- listing -------------------------------------------------------------------------------------------


def test_listing_puts_waiting_gates_first_then_the_latest_decisions(h: GateHarness) -> None:
    h.worker("w", slots=4)
    for run_id, t in (("r1", 1.0), ("r2", 2.0), ("r3", 3.0)):
        h.submit(run_id, [spec("a"), gate("g", "a")], now=t)
        h.finish(run_id, "a", now=t)
    h.decide("r2", "g", True, now=5.0)
    h.submit("r4", [spec("a"), gate("g", "a")], now=6.0)  # not reached yet: not listed
    listed = [(g["run_id"], g["state"]) for g in h.s.gates_list()]
    assert listed == [("r1", "AWAITING_APPROVAL"), ("r3", "AWAITING_APPROVAL"), ("r2", "COMPLETED")]
    assert [g["run_id"] for g in h.s.gates_list("r3")] == ["r3"]
    with pytest.raises(NotFound):
        h.s.gates_list("nope")


# ---- restart -------------------------------------------------------------------------------------------


def reloaded(s: Scheduler) -> list[RunRecord]:
    """The runs as recovery rebuilds them: specs and the journaled state fields only."""
    out = []
    for run in s.runs.values():
        copy = RunRecord(run_id=run.run_id, name=run.name, created_at=run.created_at,
                         agent_run_id=run.agent_run_id, state=run.state, finished_at=run.finished_at)
        for seq, rec in enumerate(run.jobs.values()):
            new = JobRecord(run_id=run.run_id, spec=rec.spec, seq=seq)
            for name, value in rec.state_dict().items():
                setattr(new, name, value)
            new.state = J(rec.state_dict()["state"])
            copy.jobs[rec.spec.id] = new
        out.append(copy)
    return out


def test_a_waiting_gate_survives_a_restart_with_its_original_deadline(h: GateHarness) -> None:
    a_gate_b(h)  # deadline 70
    h.submit("r2", [spec("a"), gate("g", "a"), spec("b", "g")], now=11.0)
    h.finish("r2", "a", now=12.0)
    h.decide("r2", "g", False, by="bob", comment="no", now=13.0)
    s = Scheduler()
    s.restore(reloaded(h.s), now=50.0)
    g = s.job("r", "g")
    assert g.state is J.AWAITING_APPROVAL and g.due_at == 70.0 and s.next_due() == 70.0
    decided = s.job("r2", "g")
    assert decided.state is J.REJECTED and decided.decided_by == "bob" and decided.comment == "no"
    with pytest.raises(GateNotPending):
        s.decide_gate("r2", "g", True, "alice", None, 51.0)
    s.tick(69.0)
    assert g.state is J.AWAITING_APPROVAL
    s.tick(70.0)
    assert g.state is J.TIMED_OUT and s.run("r").state is RunState.FAILED


def test_gate_fields_are_journaled_only_once_set_and_recovery_checks_their_types() -> None:
    assert {"decided_by", "comment"} <= set(JOB_STATE_FIELDS)
    rec = JobRecord(run_id="r", spec=gate("g"), seq=0)
    assert "decided_by" not in rec.state_dict() and "comment" not in rec.state_dict()
    rec.decided_by, rec.comment = "alice", "fine"
    assert rec.state_dict()["decided_by"] == "alice"
    for bad in ({"decided_by": 5}, {"comment": ["x"]}, {"state": "MAYBE"}):
        with pytest.raises(recovery.BadRecord):
            recovery._read_state(recovery._Run(), "g", "job/r/g", pack({"state": "REJECTED", **bad}))
    run = recovery._Run()
    recovery._read_state(run, "g", "job/r/g", pack({"state": "TIMED_OUT", "comment": "no decision within 3s"}))
    assert run.states["g"]["state"] == "TIMED_OUT"


# ---- declaration ------------------------------------------------------------------------------------------


def test_a_gate_needs_no_command_and_may_not_have_one() -> None:
    g = parse_job({"id": "g", "type": "gate", "hitl_message": "ok?", "depends_on": "a"})
    assert g.type == "gate" and g.command is None and g.depends_on == ["a"]
    with pytest.raises(InvalidRequest, match=r"job \(g\): a gate runs nothing: no command"):
        parse_job({"id": "g", "type": "gate", "command": "true"})
    with pytest.raises(InvalidRequest, match="expected one of run, service, gate"):
        parse_job({"id": "g", "type": "approval"})


def test_hitl_message_puts_a_gate_after_the_job_and_its_children_behind_it() -> None:
    jobs = parse_jobs([{"id": "a", "command": "true", "hitl_message": "ship?", "max_wait_seconds": 5},
                       {"id": "b", "command": "true", "depends_on": ["a"]},
                       {"id": "c", "command": "true", "depends_on": ["a", "b"]}])
    out = expand_gates(jobs)
    assert [j.id for j in out] == ["a", "hitl-gate-a", "b", "c"]
    g = out[1]
    assert g.type == "gate" and g.depends_on == ["a"] and g.hitl_message == "ship?" and g.max_wait_seconds == 5
    assert out[2].depends_on == ["hitl-gate-a"] and out[3].depends_on == ["hitl-gate-a", "b"]
    assert expand_gates(jobs[1:]) == jobs[1:]
    # jobs added later that depend on a gated job wait for its gate
    added = expand_gates([JobSpec(id="d", command=["true"], depends_on=["a"])], gated={"a"})
    assert added[0].depends_on == ["hitl-gate-a"]
    with pytest.raises(InvalidRequest, match="longer than 128"):
        expand_gates([JobSpec(id="x" * 120, command=["true"], hitl_message="?")])


def test_added_jobs_behind_a_gated_job_wait_for_its_gate(h: GateHarness) -> None:
    h.worker("w")
    h.submit("r", expand_gates([JobSpec(id="a", command=["true"], hitl_message="?"), spec("keep")]))
    assert h.s.gated_jobs("r") == {"a"}
    h.add("r", expand_gates([spec("late", "a")], h.s.gated_jobs("r")))
    assert h.s.job("r", "late").spec.depends_on == ["hitl-gate-a"]


# ---- agent runs ----------------------------------------------------------------------------------------------


def test_agent_runs_group_stages_in_order_with_state_and_waiting_gates() -> None:
    s = Scheduler()
    s.register_worker("w", ["GENERAL"], 4, 0.0)
    s.submit("s1", "plan", [spec("x")], 1.0, agent_run_id="ag")
    s.submit("other", "other", [spec("x")], 2.0, agent_run_id="zz")
    s.submit("s2", "act", [spec("x"), gate("g", "x")], 3.0, agent_run_id="ag")
    s.submit("plain", "plain", [spec("x")], 4.0)
    s.job_finished("w", _key(s, "s2", "x"), 0, 5.0)
    doc = s.agent_run("ag", now=10.0)
    assert [st["run_id"] for st in doc["stages"]] == ["s1", "s2"]
    assert doc["state"] == "RUNNING" and doc["gates_pending"] == 1 and doc["stages"][1]["gates_pending"] == ["g"]
    assert doc["stages"][0]["duration"] == 9.0 and doc["first_activity"] == 1.0
    s.job_finished("w", _key(s, "s1", "x"), 0, 6.0)
    s.decide_gate("s2", "g", False, "bob", None, 7.0)
    assert s.agent_run("ag", 10.0)["state"] == "FAILED"
    assert [a["agent_run_id"] for a in s.agent_runs()] == ["ag", "zz"]  # the most recently active first
    s.forget_finished(["s1", "s2"])
    with pytest.raises(NotFound, match="unknown agent run"):
        s.agent_run("ag", 10.0)


def _key(s: Scheduler, run_id: str, job_id: str) -> AttemptKey:
    return AttemptKey(run_id, job_id, s.job(run_id, job_id).attempts)
