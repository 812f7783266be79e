"""The scheduler after a broker restart and on the rarer paths: restore, adoption, lost dispatches,
outcomes in flight, failed sends, refused submissions."""

from __future__ import annotations

from titan_zmq.attempt import AttemptKey as K
from titan_zmq.broker.actions import Dispatch, Kill
from titan_zmq.broker.records import JobRecord, RunRecord
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.jobspec import JobSpec
from titan_zmq.states import JobState as J
from titan_zmq.states import RunState


def spec(job_id: str, *parents: str, **kw) -> JobSpec:
    return JobSpec(id=job_id, command=["true"], depends_on=list(parents), **kw)


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def journal_run(states: dict[str, tuple[JobSpec, J, dict]]) -> RunRecord:
    """A run as recovery.load_runs builds it from the store."""
    run = RunRecord(run_id="r", name="r", created_at=0.0)
    for seq, (job_id, (s, state, extra)) in enumerate(states.items()):
        rec = JobRecord(run_id="r", spec=s, seq=seq, state=state)
        for k, v in extra.items():
            setattr(rec, k, v)
        run.jobs[job_id] = rec
    return run


def test_restore_rebuilds_queues_timers_and_waits_for_running_jobs() -> None:
    s = Scheduler()
    run = journal_run({
        "done": (spec("done"), J.COMPLETED, {"attempts": 1}),
        "running": (spec("running", "done"), J.RUNNING, {"attempts": 1, "worker": "w1"}),
        "queued1": (spec("queued1", "done"), J.QUEUED, {}),
        "queued2": (spec("queued2", "done"), J.QUEUED, {}),
        "delayed": (spec("delayed", "done", delay=20), J.DELAYED, {"due_at": 120.0}),
        "pending": (spec("pending", "done"), J.PENDING, {}),  # accepted just before the crash
        "child": (spec("child", "running"), J.PENDING, {}),
    })
    s.restore([run], now=100.0)
    assert s.job("r", "pending").state is J.QUEUED  # its parent is done: released at once
    assert s.job("r", "child").state is J.PENDING
    assert s.next_due() == 120.0
    acts = s.register_worker("w2", ["GENERAL"], 3, 101.0)
    assert [d.key.job_id for d in of(acts, Dispatch)] == ["queued1", "queued2", "pending"]  # original order
    s.tick(119.0)
    assert s.job("r", "delayed").state is J.DELAYED
    s.tick(120.0)
    assert s.job("r", "delayed").state is J.QUEUED  # at its original due time, not 20 s after restart
    # the worker that ran "running" comes back and reports it: adopted, not run again
    acts = s.register_worker("w1", ["GENERAL"], 4, 102.0, running=[("r", "running", 1)])
    assert not of(acts, Kill) and s.job("r", "running").attempts == 1
    assert ("r", "running", 1) in s.workers["w1"].running


def test_unclaimed_running_jobs_are_requeued_after_the_grace() -> None:
    s = Scheduler()
    run = journal_run({"a": (spec("a"), J.RUNNING, {"attempts": 1, "worker": "gone"})})
    s.restore([run], now=0.0)
    s.register_worker("w2", ["GENERAL"], 4, 1.0)
    assert s.job("r", "a").state is J.RUNNING  # still waiting for its worker
    acts = s.requeue_unclaimed(9.0)
    assert of(acts, Dispatch) == [Dispatch("w2", K("r", "a", 2))]


def test_a_dispatch_lost_in_a_crash_is_requeued_when_the_worker_does_not_know_it() -> None:
    s = Scheduler()
    run = journal_run({"a": (spec("a"), J.RUNNING, {"attempts": 1, "worker": "w1"})})
    s.restore([run], now=0.0)
    acts = s.register_worker("w1", ["GENERAL"], 4, 1.0, running=[], done=[])
    assert of(acts, Dispatch) == [Dispatch("w1", K("r", "a", 2))]


def test_an_outcome_in_flight_is_not_lost_if_its_worker_dies_before_sending_it() -> None:
    s = Scheduler()
    s.register_worker("w1", ["GENERAL"], 1, 0.0)
    s.submit("r", "r", [spec("a")], 0.0)
    # w1 reconnects saying a finished (outcome in its outbox), then dies before re-sending it
    s.register_worker("w1", ["GENERAL"], 1, 1.0, running=[], done=[("r", "a", 1)])
    assert s.job("r", "a").state is J.RUNNING
    s.worker_lost("w1", 2.0)
    assert s.job("r", "a").state is J.QUEUED
    acts = s.register_worker("w2", ["GENERAL"], 1, 3.0)
    assert of(acts, Dispatch) == [Dispatch("w2", K("r", "a", 2))]


def test_a_reconnecting_worker_keeps_what_it_reports_and_the_stale_attempt_is_killed() -> None:
    s = Scheduler()
    s.register_worker("w1", ["GENERAL"], 2, 0.0)
    s.submit("r", "r", [spec("a"), spec("b")], 0.0)
    s.worker_lost("w1", 5.0)  # declared lost: both re-queued
    s.register_worker("w2", ["GENERAL"], 2, 6.0)  # they run again elsewhere as attempt 2
    acts = s.register_worker("w1", ["GENERAL"], 2, 7.0, running=[("r", "a", 1), ("r", "b", 1)])
    assert sorted(k.key.job_id for k in of(acts, Kill)) == ["a", "b"]
    s.job_finished("w1", K("r", "a", 1), 0, 8.0)  # the stale result is ignored
    assert s.job("r", "a").state is J.RUNNING and s.job("r", "a").worker == "w2"


def test_a_failed_send_gives_the_attempt_back_to_the_queue() -> None:
    s = Scheduler()
    s.register_worker("w1", ["GENERAL"], 1, 0.0)
    acts = s.submit("r", "r", [spec("a")], 0.0)
    assert of(acts, Dispatch) == [Dispatch("w1", K("r", "a", 1))]
    acts = s.dispatch_failed("w1", K("r", "a", 1), 0.1)
    assert of(acts, Dispatch) == [Dispatch("w1", K("r", "a", 2))]  # the slot came back, so it goes again


def test_a_refused_submission_leaves_no_trace() -> None:
    s = Scheduler()
    s.register_worker("w1", ["GENERAL"], 1, 0.0)
    s.submit("r", "r", [spec("a"), spec("b")], 0.0)
    s.discard_run("r")
    assert "r" not in s.runs and s.workers["w1"].running == set()
    acts = s.submit("r2", "r2", [spec("c")], 1.0)
    assert of(acts, Dispatch) == [Dispatch("w1", K("r2", "c", 1))]  # the queue entries of "r" died lazily


def test_restored_finished_run_stays_finished() -> None:
    s = Scheduler()
    run = journal_run({"a": (spec("a"), J.COMPLETED, {"attempts": 1})})
    run.state = RunState.SUCCEEDED
    assert s.restore([run], 0.0) == []
    assert s.run("r").state is RunState.SUCCEEDED
