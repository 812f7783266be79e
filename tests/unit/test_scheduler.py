"""The scheduler state machine: events in, actions out, time passed in explicitly."""

from __future__ import annotations

import random
from typing import Any

import pytest

from titan_zmq.attempt import AttemptKey as K
from titan_zmq.broker.actions import Dispatch, Journal, Kill, RunFinished
from titan_zmq.broker.scheduler import Scheduler, backoff
from titan_zmq.errors import InvalidRequest, NotFound
from titan_zmq.jobspec import JobSpec
from titan_zmq.states import JobState, RunState

J = JobState


def spec(id: str, *parents: str, **kw: Any) -> JobSpec:
    return JobSpec(id=id, command=["true"], depends_on=list(parents), **kw)


def of(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def dispatched(actions: list) -> list[tuple[str, str, str, int]]:
    return [(d.worker, *d.key) for d in of(actions, Dispatch)]


class Harness:
    """Drives a Scheduler and checks, after every event, that each change was journaled and the invariants hold."""

    def __init__(self, retry_backoff: float = 1.0):
        self.s = Scheduler(retry_backoff=retry_backoff)
        self.finished: list[RunFinished] = []

    # -- checking --

    def _snapshot(self) -> dict[tuple[str, str | None], Any]:
        snap: dict[tuple[str, str | None], Any] = {}
        for run in self.s.runs.values():
            snap[(run.run_id, None)] = run.meta()
            for jid, rec in run.jobs.items():
                state = rec.state_dict()
                state.pop("started_at")  # by design journaled with the attempt's next transition, not alone
                snap[(run.run_id, jid)] = state
        return snap

    def _call(self, method: str, *args: Any, **kw: Any) -> list:
        before = self._snapshot()
        actions = getattr(self.s, method)(*args, **kw)
        after = self._snapshot()
        changed = {k for k, v in after.items() if before.get(k) != v}
        journaled = {(a.run_id, a.job_id) for a in of(actions, Journal)}
        assert changed <= journaled, f"{method}: changed without a Journal action: {changed - journaled}"
        for d in of(actions, Dispatch):
            w = self.s.workers[d.worker]
            rec = self.s.job(d.key.run_id, d.key.job_id)
            assert rec.spec.requirement in w.caps, f"{d} sent to a worker without {rec.spec.requirement}"
        self.finished += of(actions, RunFinished)
        self.check_invariants()
        return actions

    def check_invariants(self) -> None:
        s = self.s
        for w in s.workers.values():
            assert 0 <= len(w.running) <= w.slots, f"{w.name} runs {len(w.running)} > {w.slots} slots"
        for run in s.runs.values():
            open_jobs = [r for r in run.jobs.values() if not r.terminal]
            assert run.open_jobs == len(open_jobs)
            assert run.state.terminal == (not open_jobs), (run.state, [r.state for r in open_jobs])
            for rec in run.jobs.values():
                if rec.state is J.RUNNING:
                    assert rec.worker in s.workers, f"{rec.spec.id} RUNNING on unknown worker {rec.worker}"
                    assert (run.run_id, rec.spec.id, rec.attempts) in s.workers[rec.worker].running
        ids = [r.run_id for r in self.finished]
        assert len(ids) == len(set(ids)), f"RunFinished emitted twice: {ids}"

    # -- events --

    def submit(self, run_id: str, jobs: list[JobSpec], now: float = 0.0) -> list:
        return self._call("submit", run_id, run_id, jobs, now)

    def worker(self, name: str, caps: tuple[str, ...] = ("GENERAL",), slots: int = 4, now: float = 0.0,
               running: tuple = ()) -> list:
        return self._call("register_worker", name, caps, slots, now, running)

    def lost(self, name: str, now: float = 0.0) -> list:
        return self._call("worker_lost", name, now)

    def finish(self, run_id: str, job_id: str, code: int = 0, now: float = 0.0) -> list:
        rec = self.s.job(run_id, job_id)
        assert rec.state is J.RUNNING, f"{job_id} is {rec.state}"
        return self._call("job_finished", rec.worker, K(run_id, job_id, rec.attempts), code, now)

    def report(self, worker: str, run_id: str, job_id: str, attempt: int, code: int = 0, now: float = 0.0) -> list:
        return self._call("job_finished", worker, K(run_id, job_id, attempt), code, now)

    def cancel(self, run_id: str, job_id: str | None, now: float = 0.0) -> list:
        return self._call("cancel", run_id, job_id, now)

    def tick(self, now: float) -> list:
        return self._call("tick", now)

    def add(self, run_id: str, jobs: list[JobSpec], now: float = 0.0) -> list:
        """As the broker does it: the one check (before the specs are stored), then the event."""
        self.s.check_new_jobs(run_id, jobs)
        return self._call("add_jobs", run_id, jobs, now)

    # -- queries --

    def st(self, run_id: str, job_id: str) -> JobState:
        return self.s.job(run_id, job_id).state

    def run_state(self, run_id: str) -> RunState:
        return self.s.run(run_id).state


@pytest.fixture
def h() -> Harness:
    return Harness()


# ---- submission and DAG release ----------------------------------------------------------------


def test_submit_journals_run_and_every_job(h: Harness) -> None:
    acts = h.submit("r", [spec("a"), spec("b", "a")])
    journals = of(acts, Journal)
    assert journals[0] == Journal("r")
    assert {Journal("r", "a"), Journal("r", "b")} <= set(journals)
    assert h.st("r", "a") is J.QUEUED and h.st("r", "b") is J.PENDING
    assert h.s.queued_count() == 1


def test_submit_refuses_bad_dag_and_duplicate_run(h: Harness) -> None:
    with pytest.raises(InvalidRequest, match="ghost"):
        h.submit("bad", [spec("a", "ghost")])
    assert "bad" not in h.s.runs
    h.submit("r", [spec("a")])
    with pytest.raises(InvalidRequest, match="already exists"):
        h.submit("r", [spec("a")])
    with pytest.raises(NotFound):
        h.s.run("nope")
    with pytest.raises(NotFound):
        h.s.job("r", "nope")


def test_diamond_releases_sink_only_after_both_branches(h: Harness) -> None:
    h.worker("w1", slots=4)
    acts = h.submit("r", [spec("a"), spec("b", "a"), spec("c", "a"), spec("d", "b", "c")])
    assert dispatched(acts) == [("w1", "r", "a", 1)]
    acts = h.finish("r", "a")
    assert sorted(d[2] for d in dispatched(acts)) == ["b", "c"]
    assert h.st("r", "d") is J.PENDING
    acts = h.finish("r", "b")
    assert dispatched(acts) == []
    assert h.st("r", "d") is J.PENDING
    acts = h.finish("r", "c")
    assert dispatched(acts) == [("w1", "r", "d", 1)]
    assert h.run_state("r") is RunState.RUNNING
    acts = h.finish("r", "d", now=5)
    assert RunFinished("r", RunState.SUCCEEDED) in acts
    assert h.run_state("r") is RunState.SUCCEEDED
    assert h.s.run("r").finished_at == 5


def test_diamond_branch_dead_skips_sink(h: Harness) -> None:
    h.worker("w1")
    h.submit("r", [spec("a"), spec("b", "a", retries=0), spec("c", "a"), spec("d", "b", "c")])
    h.finish("r", "a")
    h.finish("r", "c")
    acts = h.finish("r", "b", code=2)
    assert h.st("r", "b") is J.DEAD and h.st("r", "d") is J.SKIPPED
    assert RunFinished("r", RunState.FAILED) in acts
    assert dispatched(acts) == []


# ---- dispatch ------------------------------------------------------------------------------------


def test_per_capability_queues(h: Harness) -> None:
    h.worker("cpu", caps=("GENERAL",), slots=4)
    acts = h.submit("r", [spec("gpu", requirement="GPU", priority=100), spec("g1"), spec("g2")])
    assert sorted(d[2] for d in dispatched(acts)) == ["g1", "g2"]
    assert h.st("r", "gpu") is J.QUEUED
    h.finish("r", "g1")
    assert h.st("r", "gpu") is J.QUEUED  # a free GENERAL slot does not take a GPU job
    acts = h.worker("gpu-box", caps=("GPU",), slots=1)
    assert dispatched(acts) == [("gpu-box", "r", "gpu", 1)]


def test_custom_tag_routing(h: Harness) -> None:
    h.worker("plain", caps=("GENERAL",))
    h.worker("big", caps=("GENERAL", "HIGH_MEM"))
    acts = h.submit("r", [spec("m", requirement="HIGH_MEM")])
    assert dispatched(acts) == [("big", "r", "m", 1)]


def test_priority_highest_first_fifo_among_equals(h: Harness) -> None:
    jobs = [spec("p0a"), spec("p5a", priority=5), spec("p1", priority=1), spec("p5b", priority=5),
            spec("p0b"), spec("neg", priority=-3), spec("p0c")]
    h.submit("r", jobs)
    order = []
    acts = h.worker("w", slots=1)
    while True:
        ds = dispatched(acts)
        if not ds:
            break
        assert len(ds) == 1
        order.append(ds[0][2])
        acts = h.finish("r", ds[0][2])
    assert order == ["p5a", "p5b", "p1", "p0a", "p0b", "p0c", "neg"]


def test_fifo_across_runs_and_late_high_priority_overtakes(h: Harness) -> None:
    h.worker("w", slots=1)
    h.submit("r0", [spec("busy")])
    h.submit("r1", [spec("x")], now=1)
    h.submit("r2", [spec("y")], now=2)
    h.submit("r3", [spec("urgent", priority=1)], now=3)
    order = []
    acts = h.finish("r0", "busy")
    for _ in range(3):
        (d,) = dispatched(acts)
        order.append(d[1])
        acts = h.finish(d[1], d[2])
    assert order == ["r3", "r1", "r2"]


def test_least_connection_spreads_evenly_and_respects_slots(h: Harness) -> None:
    h.worker("w1", slots=4)
    h.worker("w2", slots=4)
    acts = h.submit("r", [spec(f"j{i}") for i in range(9)])
    ds = dispatched(acts)
    assert len(ds) == 8
    assert [d[0] for d in ds] == ["w1", "w2"] * 4
    assert len(h.s.workers["w1"].running) == 4 and len(h.s.workers["w2"].running) == 4
    assert h.st("r", "j8") is J.QUEUED  # no prefetch beyond free slots
    acts = h.finish("r", ds[1][2])  # a job on w2 ends
    assert dispatched(acts) == [("w2", "r", "j8", 1)]


def test_least_connection_prefers_least_busy(h: Harness) -> None:
    h.worker("w1", slots=4)
    h.submit("r", [spec("a"), spec("b"), spec("c")])
    h.worker("w2", slots=4)
    acts = h.submit("r2", [spec("x"), spec("y"), spec("z")])
    # w1 runs 3, w2 none: every new job goes to the less busy w2 (0, 1, 2 < 3)
    assert [d[0] for d in dispatched(acts)] == ["w2", "w2", "w2"]
    acts = h.submit("r3", [spec("t")])
    assert [d[0] for d in dispatched(acts)] == ["w1"]  # 3 vs 3: registration order breaks the tie


def test_never_more_running_than_slots(h: Harness) -> None:
    h.worker("w1", slots=2)
    h.worker("w2", slots=1)
    acts = h.submit("r", [spec(f"j{i}") for i in range(10)])
    assert len(dispatched(acts)) == 3
    for _ in range(7):
        running = [rec for rec in h.s.run("r").jobs.values() if rec.state is J.RUNNING]
        assert len(running) == 3
        h.finish("r", running[0].spec.id)
    assert h.s.queued_count() == 0


# ---- retries and delays ----------------------------------------------------------------------------


def test_backoff_doubles_and_caps() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert backoff(3, base=0.5) == 2.0
    assert backoff(20) == 60.0
    assert backoff(7, base=1, cap=10) == 10.0
    assert backoff(0) == 1.0


def test_retries_then_dead_descendants_skipped_run_failed(h: Harness) -> None:
    h.worker("w", slots=2)
    h.submit("r", [spec("flaky", retries=3), spec("child", "flaky"), spec("grandchild", "child")])
    now = 10.0
    for attempt in (1, 2, 3):
        rec = h.s.job("r", "flaky")
        assert rec.state is J.RUNNING and rec.attempts == attempt
        acts = h.finish("r", "flaky", code=1, now=now)
        delay = backoff(attempt)
        assert h.st("r", "flaky") is J.FAILED
        assert rec.due_at == now + delay and h.s.next_due() == now + delay
        assert not dispatched(acts) and not of(acts, RunFinished)
        assert not dispatched(h.tick(now + delay - 0.01))
        assert h.st("r", "flaky") is J.FAILED
        acts = h.tick(now + delay)
        assert dispatched(acts) == [("w", "r", "flaky", attempt + 1)]
        now += delay + 1
    acts = h.finish("r", "flaky", code=1, now=now)
    rec = h.s.job("r", "flaky")
    assert rec.state is J.DEAD and rec.attempts == 4 and rec.failures == 4 and rec.exit_code == 1
    assert h.st("r", "child") is J.SKIPPED and h.st("r", "grandchild") is J.SKIPPED
    assert RunFinished("r", RunState.FAILED) in acts
    assert h.run_state("r") is RunState.FAILED
    assert h.tick(now + 1000) == []


def test_failed_attempt_goes_queued_after_backoff_when_no_slot(h: Harness) -> None:
    h.worker("w", slots=1)
    h.submit("r", [spec("a", retries=1), spec("b")])
    acts = h.finish("r", "a", code=3, now=1)
    assert h.st("r", "a") is J.FAILED
    assert dispatched(acts) == [("w", "r", "b", 1)]  # the freed slot goes to b
    h.tick(2)
    assert h.st("r", "a") is J.QUEUED
    acts = h.finish("r", "b", now=3)
    assert dispatched(acts) == [("w", "r", "a", 2)]
    acts = h.finish("r", "a", code=0, now=4)
    assert RunFinished("r", RunState.SUCCEEDED) in acts


def test_retries_zero_is_dead_at_once(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("a", retries=0)])
    acts = h.finish("r", "a", code=1)
    assert h.st("r", "a") is J.DEAD and RunFinished("r", RunState.FAILED) in acts


def test_custom_retry_backoff_base() -> None:
    h = Harness(retry_backoff=0.25)
    h.worker("w")
    h.submit("r", [spec("a")])
    h.finish("r", "a", code=1, now=10)
    assert h.s.job("r", "a").due_at == 10.25
    assert dispatched(h.tick(10.25)) == [("w", "r", "a", 2)]
    h.finish("r", "a", code=1, now=20)
    assert h.s.job("r", "a").due_at == 20.5


def test_delay_counts_from_dependency_release(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("a"), spec("b", "a", delay=5)], now=0)
    assert h.st("r", "b") is J.PENDING
    h.tick(50)  # time passing before the parents finish does not count
    acts = h.finish("r", "a", now=100)
    assert h.st("r", "b") is J.DELAYED and not dispatched(acts)
    assert h.s.job("r", "b").due_at == 105 and h.s.next_due() == 105
    assert not dispatched(h.tick(104.99)) and h.st("r", "b") is J.DELAYED
    assert dispatched(h.tick(105)) == [("w", "r", "b", 1)]


def test_root_delay_counts_from_submission(h: Harness) -> None:
    h.worker("w")
    acts = h.submit("r", [spec("a", delay=3)], now=50)
    assert not dispatched(acts) and h.st("r", "a") is J.DELAYED
    assert not dispatched(h.tick(52.9))
    assert dispatched(h.tick(53)) == [("w", "r", "a", 1)]


# ---- cancel --------------------------------------------------------------------------------------------


def test_cancel_running_job_kills_and_cancels_descendants(h: Harness) -> None:
    h.worker("w", slots=1)
    h.submit("r", [spec("a"), spec("b", "a"), spec("c", "b")])
    h.submit("other", [spec("o")])
    assert h.st("other", "o") is J.QUEUED
    acts = h.cancel("r", "a", now=7)
    assert of(acts, Kill) == [Kill("w", K("r", "a", 1))]
    assert [h.st("r", j) for j in "abc"] == [J.CANCELLED] * 3
    assert RunFinished("r", RunState.CANCELLED) in acts
    assert h.run_state("r") is RunState.CANCELLED
    # the slot stays taken until the worker says the attempt is over
    assert dispatched(acts) == [] and h.st("other", "o") is J.QUEUED
    acts = h.report("w", "r", "a", 1, code=143, now=8)
    assert dispatched(acts) == [("w", "other", "o", 1)]
    assert h.st("r", "a") is J.CANCELLED and not of(acts, RunFinished)
    assert h.s.job("r", "a").exit_code is None  # the stale report changed nothing


def test_cancel_one_branch_run_ends_cancelled_after_the_rest(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("a"), spec("b")])
    acts = h.cancel("r", "a")
    assert not of(acts, RunFinished) and h.run_state("r") is RunState.RUNNING
    acts = h.finish("r", "b")
    assert RunFinished("r", RunState.CANCELLED) in acts


def test_cancel_delayed_job_never_dispatched(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("a", delay=5), spec("b", "a")], now=0)
    acts = h.cancel("r", "a", now=1)
    assert not of(acts, Kill)
    assert h.st("r", "a") is J.CANCELLED and h.st("r", "b") is J.CANCELLED
    assert dispatched(h.tick(100)) == []
    assert h.st("r", "a") is J.CANCELLED


def test_cancel_queued_job_never_dispatched(h: Harness) -> None:
    h.submit("r", [spec("a"), spec("b", priority=9), spec("c")])
    h.cancel("r", "b")
    acts = h.worker("w", slots=4)
    assert sorted(d[2] for d in dispatched(acts)) == ["a", "c"]
    assert h.st("r", "b") is J.CANCELLED


def test_cancel_failed_job_waiting_for_retry(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("a")])
    h.finish("r", "a", code=1, now=0)
    h.cancel("r", "a", now=0.5)
    assert dispatched(h.tick(100)) == [] and h.st("r", "a") is J.CANCELLED


def test_cancel_whole_run(h: Harness) -> None:
    h.worker("w", slots=1)
    h.submit("r", [spec("run"), spec("queued"), spec("delayed", delay=9), spec("pending", "run")])
    h.submit("keep", [spec("k")])
    acts = h.cancel("r", None, now=3)
    assert of(acts, Kill) == [Kill("w", K("r", "run", 1))]
    assert all(rec.state is J.CANCELLED for rec in h.s.run("r").jobs.values())
    assert of(acts, RunFinished) == [RunFinished("r", RunState.CANCELLED)]
    assert h.st("keep", "k") is J.QUEUED and h.run_state("keep") is RunState.RUNNING
    assert h.cancel("r", None, now=4) == []  # cancelling a finished run again does nothing
    h.report("w", "r", "run", 1, code=143)
    assert h.st("keep", "k") is J.RUNNING


def test_cancel_completed_job_changes_nothing(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("a"), spec("b", "a")])
    h.finish("r", "a")
    acts = h.cancel("r", "a")
    assert h.st("r", "a") is J.COMPLETED and h.st("r", "b") is J.RUNNING
    assert not of(acts, Kill)


# ---- workers coming and going ----------------------------------------------------------------------------


def test_worker_lost_requeues_and_redispatches_elsewhere(h: Harness) -> None:
    h.worker("w1", slots=4)
    h.submit("r", [spec("a"), spec("b")])
    h.worker("w2", slots=4)
    acts = h.lost("w1", now=5)
    assert sorted(dispatched(acts)) == [("w2", "r", "a", 2), ("w2", "r", "b", 2)]
    assert h.s.job("r", "a").worker == "w2"
    assert "w1" not in h.s.workers


def test_worker_lost_without_other_worker_leaves_jobs_queued(h: Harness) -> None:
    h.worker("w1")
    h.submit("r", [spec("a")])
    acts = h.lost("w1")
    assert h.st("r", "a") is J.QUEUED and h.s.job("r", "a").worker is None
    assert Journal("r", "a") in acts
    acts = h.worker("w9")
    assert dispatched(acts) == [("w9", "r", "a", 2)]
    assert h.lost("unknown") == []


def test_stale_job_finished_changes_nothing(h: Harness) -> None:
    h.worker("w1", slots=1)
    h.submit("r", [spec("a")])
    h.worker("w2", slots=1)
    h.lost("w1")
    assert h.s.job("r", "a").attempts == 2 and h.s.job("r", "a").worker == "w2"
    h.worker("w1", slots=1)  # back, with nothing running
    # the old attempt reports (from its old worker): no state change, no journal of the job
    acts = h.report("w1", "r", "a", 1, code=0)
    assert h.st("r", "a") is J.RUNNING and not of(acts, Journal) and not of(acts, RunFinished)
    # the current attempt number, but reported by a worker that is not running it
    acts = h.report("w1", "r", "a", 2, code=0)
    assert h.st("r", "a") is J.RUNNING and not of(acts, Journal)
    # a report about an unknown run or job
    assert h.report("w2", "ghost", "a", 1) == []
    # a stale report must not free the slot of the attempt that is really running
    assert h.s.workers["w2"].free == 0
    acts = h.finish("r", "a")
    assert RunFinished("r", RunState.SUCCEEDED) in acts


def test_stale_job_finished_frees_only_the_slot(h: Harness) -> None:
    h.worker("w", slots=1)
    h.submit("r", [spec("a")])
    h.submit("r2", [spec("b")])
    h.cancel("r", "a")
    assert h.s.workers["w"].free == 0
    acts = h.report("w", "r", "a", 1, code=0)
    assert h.st("r", "a") is J.CANCELLED
    assert dispatched(acts) == [("w", "r2", "b", 1)]


def test_job_started_sets_start_time_only_for_current_attempt(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("a")])
    assert h._call("job_started", "w", K("r", "a", 9), 1.0) == []
    assert h._call("job_started", "other", K("r", "a", 1), 1.0) == []
    assert h.s.job("r", "a").started_at is None
    acts = h._call("job_started", "w", K("r", "a", 1), 2.0)
    assert acts == [] and h.s.job("r", "a").started_at == 2.0  # journaled with the next transition
    h._call("job_finished", "w", K("r", "a", 1), 0, 3.0)
    assert h.s.job("r", "a").state_dict()["started_at"] == 2.0


# ---- affinity -------------------------------------------------------------------------------------


def _affinity_setup(h: Harness, affinity: bool) -> None:
    h.worker("w1", slots=2)
    h.submit("r", [spec("a"), spec("b", "a", affinity=affinity)])
    h.submit("busy", [spec("z")])  # w1 now runs a and z
    h.worker("w2", slots=2)


def test_affinity_pins_child_to_parent_worker(h: Harness) -> None:
    _affinity_setup(h, affinity=True)
    acts = h.finish("r", "a")
    assert dispatched(acts) == [("w1", "r", "b", 1)]  # although w2 is less busy


def test_without_affinity_least_connection_wins(h: Harness) -> None:
    _affinity_setup(h, affinity=False)
    acts = h.finish("r", "a")
    assert dispatched(acts) == [("w2", "r", "b", 1)]


def test_affinity_waits_for_parent_worker_then_falls_back_when_lost(h: Harness) -> None:
    h.worker("w1", slots=1)
    h.submit("r", [spec("a"), spec("b", "a", affinity=True)])
    h.worker("w2", slots=1)
    h.submit("other", [spec("c")])  # -> w2
    h.submit("hi", [spec("f", priority=10)])  # queued: both workers full
    acts = h.finish("r", "a")
    assert dispatched(acts) == [("w1", "hi", "f", 1)]  # higher priority takes w1's free slot
    assert h.st("r", "b") is J.QUEUED
    acts = h.finish("other", "c")
    assert dispatched(acts) == [] and h.st("r", "b") is J.QUEUED  # pinned: does not go to w2
    acts = h.lost("w1")
    # f (re-queued, priority 10) goes first; b is no longer pinned and follows on w2
    assert dispatched(acts) == [("w2", "hi", "f", 2)]
    assert h.st("r", "b") is J.QUEUED
    acts = h.finish("hi", "f")
    assert dispatched(acts) == [("w2", "r", "b", 1)]


def test_affinity_falls_back_when_parent_worker_already_gone(h: Harness) -> None:
    h.worker("w1", slots=1)
    h.submit("r", [spec("a"), spec("p"), spec("b", "a", "p", affinity=True)])
    h.worker("w2", slots=1)  # a on w1, p on w2
    h.finish("r", "a")
    h.lost("w1")
    acts = h.finish("r", "p")
    assert dispatched(acts) == [("w2", "r", "b", 1)]


def test_affinity_ignores_parent_worker_without_capability(h: Harness) -> None:
    h.worker("gpu", caps=("GPU",), slots=2)
    h.worker("cpu", caps=("GENERAL",), slots=2)
    h.submit("r", [spec("train", requirement="GPU"), spec("report", "train", affinity=True)])
    acts = h.finish("r", "train")
    assert dispatched(acts) == [("cpu", "r", "report", 1)]


# ---- adding jobs to a running run ------------------------------------------------------------------------


def test_add_jobs_to_running_run(h: Harness) -> None:
    h.worker("w", slots=4)
    h.submit("r", [spec("a"), spec("b", "a")])
    h.finish("r", "a")  # a COMPLETED, b RUNNING
    acts = h.add("r", [spec("c", "a"), spec("d", "b"), spec("e", "c", "d")])
    assert dispatched(acts) == [("w", "r", "c", 1)]  # its parent is already done
    assert h.st("r", "d") is J.PENDING and h.st("r", "e") is J.PENDING
    assert {Journal("r", "c"), Journal("r", "d"), Journal("r", "e")} <= set(of(acts, Journal))
    assert not of(h.finish("r", "b"), RunFinished)
    assert not of(h.finish("r", "c"), RunFinished)
    assert not of(h.finish("r", "d"), RunFinished)
    acts = h.finish("r", "e")
    assert RunFinished("r", RunState.SUCCEEDED) in acts


def test_add_jobs_validates_against_existing(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("a")])
    with pytest.raises(InvalidRequest, match="duplicate"):
        h.add("r", [spec("a")])
    with pytest.raises(InvalidRequest, match="ghost"):
        h.add("r", [spec("x", "ghost")])
    assert set(h.s.run("r").jobs) == {"a"}
    with pytest.raises(NotFound):
        h.add("nope", [spec("x")])


def test_add_jobs_to_finished_run_refused(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("a")])
    h.finish("r", "a")
    assert h.run_state("r") is RunState.SUCCEEDED
    with pytest.raises(InvalidRequest, match="finished"):
        h.add("r", [spec("b", "a")])
    assert set(h.s.run("r").jobs) == {"a"}


def test_add_jobs_depending_on_dead_job_is_skipped(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("a", retries=0), spec("b")])
    h.finish("r", "a", code=1)
    h.add("r", [spec("c", "a")])
    assert h.st("r", "c") is J.SKIPPED
    acts = h.finish("r", "b")
    assert RunFinished("r", RunState.FAILED) in acts


# ---- (re-)registration and adoption ------------------------------------------------------------------------


def _restored_running_job(h: Harness, worker: str | None = "w1", attempt: int = 1) -> None:
    """Stand-in for a broker that rebuilt its state: job a is RUNNING on worker w1, no worker registered yet."""
    h.submit("r", [spec("a"), spec("b", "a")])
    rec = h.s.job("r", "a")
    rec.state, rec.attempts, rec.worker = J.RUNNING, attempt, worker


@pytest.mark.parametrize("recorded_worker", ["w1", None])
def test_register_adopts_matching_running_attempt(recorded_worker: str | None) -> None:
    h = Harness()
    _restored_running_job(h, worker=recorded_worker)
    acts = h.s.register_worker("w1", ["GENERAL"], 4, 10.0, [("r", "a", 1)])
    assert not of(acts, Kill) and not of(acts, Dispatch)
    rec = h.s.job("r", "a")
    assert rec.state is J.RUNNING and rec.attempts == 1 and rec.worker == "w1"
    assert ("r", "a", 1) in h.s.workers["w1"].running
    assert Journal("r", "a") in acts
    acts = h.s.job_finished("w1", K("r", "a", 1), 0, 11.0)  # its completion is accepted
    assert h.s.job("r", "a").state is J.COMPLETED
    assert dispatched(acts) == [("w1", "r", "b", 1)]


@pytest.mark.parametrize(
    "report",
    [("r", "a", 5), ("r", "a", 0), ("r", "ghost", 1), ("ghost", "a", 1)],
    ids=["newer-attempt", "older-attempt", "unknown-job", "unknown-run"],
)
def test_register_kills_unwanted_reported_attempt(report: tuple[str, str, int]) -> None:
    h = Harness()
    _restored_running_job(h)
    acts = h.s.register_worker("w1", ["GENERAL"], 4, 10.0, [report])
    assert Kill("w1", K(*report)) in acts
    assert report not in h.s.workers["w1"].running


def test_register_kills_attempt_recorded_on_another_worker() -> None:
    h = Harness()
    _restored_running_job(h, worker="w1")
    acts = h.s.register_worker("w2", ["GENERAL"], 4, 10.0, [("r", "a", 1)])
    assert Kill("w2", K("r", "a", 1)) in acts
    assert h.s.job("r", "a").worker == "w1"


def test_register_kills_attempt_of_finished_or_cancelled_job(h: Harness) -> None:
    h.worker("w1", slots=1)
    h.submit("r", [spec("a"), spec("b")])
    h.finish("r", "a")
    h.cancel("r", "b")
    h.lost("w1")
    acts = h.worker("w1", slots=1, running=(("r", "a", 1), ("r", "b", 1)))
    assert set(of(acts, Kill)) == {Kill("w1", K("r", "a", 1)), Kill("w1", K("r", "b", 1))}


def test_reregister_same_worker_adopts_its_running_attempts(h: Harness) -> None:
    h.worker("w1", slots=2)
    h.submit("r", [spec("a")])
    # the worker reconnects on a new socket before the broker noticed anything, still running attempt 1
    acts = h.worker("w1", slots=2, running=(("r", "a", 1),))
    assert not of(acts, Kill), of(acts, Kill)
    assert not of(acts, Dispatch), of(acts, Dispatch)
    assert h.s.job("r", "a").attempts == 1


def test_reregister_same_worker_requeues_attempts_it_does_not_report(h: Harness) -> None:
    h.worker("w1", slots=2)
    h.submit("r", [spec("a")])
    acts = h.worker("w1", slots=2, caps=("GENERAL",), running=())
    # the attempt is gone from the worker: it runs again (attempt 2)
    assert dispatched(acts) == [("w1", "r", "a", 2)]


# ---- randomized model check --------------------------------------------------------------------------------


def test_random_event_sequences_keep_invariants_and_drain() -> None:
    rng = random.Random(4242)
    h = Harness(retry_backoff=0.5)
    now = 0.0
    n_runs = 0
    n_adds = 0
    cap_sets = [("GENERAL",), ("GPU",), ("GENERAL", "GPU"), ("GENERAL", "HIGH_MEM")]

    def random_jobs(prefix: str, existing: list[str]) -> list[JobSpec]:
        jobs: list[JobSpec] = []
        for i in range(rng.randint(1, 5)):
            pool = existing + [j.id for j in jobs]
            parents = rng.sample(pool, k=min(len(pool), rng.randint(0, 2)))
            jobs.append(spec(
                f"{prefix}{i}", *parents,
                requirement=rng.choice(["GENERAL"] * 4 + ["GPU", "HIGH_MEM"]),
                priority=rng.randint(0, 2), delay=rng.choice([0, 0, 0, 1.5]),
                retries=rng.randint(0, 2), affinity=rng.random() < 0.3,
            ))
        return jobs

    for _step in range(800):
        now += rng.random()
        e = rng.random()
        running = [(w.name, key) for w in h.s.workers.values() for key in w.running]
        live_runs = [r for r in h.s.runs.values() if not r.state.terminal]
        if e < 0.12 or not h.s.runs:
            n_runs += 1
            h.submit(f"run{n_runs}", random_jobs("j", []), now)
        elif e < 0.2:
            h.worker(f"w{rng.randint(0, 4)}", caps=rng.choice(cap_sets), slots=rng.randint(1, 3), now=now,
                     running=tuple(k for _, k in rng.sample(running, k=min(len(running), rng.randint(0, 2)))))
        elif e < 0.25 and h.s.workers:
            h.lost(rng.choice(sorted(h.s.workers)), now)
        elif e < 0.6 and running:
            name, (run_id, job_id, attempt) = rng.choice(running)
            h.report(name, run_id, job_id, attempt, code=rng.choice([0, 0, 0, 1]), now=now)
        elif e < 0.65 and live_runs:
            run = rng.choice(live_runs)
            h.cancel(run.run_id, rng.choice([None, *sorted(run.jobs)]), now)
        elif e < 0.72 and live_runs:
            run = rng.choice(live_runs)
            n_adds += 1
            h.add(run.run_id, random_jobs(f"x{n_adds}_", sorted(run.jobs)), now)
        else:
            h.tick(now)

    # drain: one worker that can run anything; finish everything successfully
    for name in sorted(h.s.workers):
        h.lost(name, now)
    h.worker("final", caps=("GENERAL", "GPU", "HIGH_MEM"), slots=3, now=now)
    for _ in range(5000):
        if all(r.state.terminal for r in h.s.runs.values()):
            break
        now += 10.0
        h.tick(now)
        for run_id, job_id, attempt in sorted(h.s.workers["final"].running):
            h.report("final", run_id, job_id, attempt, 0, now)
    assert all(r.state.terminal for r in h.s.runs.values())
    assert h.s.queued_count() == 0 and not h.s.workers["final"].running
    assert len(h.finished) == len(h.s.runs) == n_runs
    for run in h.s.runs.values():
        states = {rec.state for rec in run.jobs.values()}
        if run.state is RunState.SUCCEEDED:
            assert states == {J.COMPLETED}
        if RunState.FAILED is run.state:
            assert states & {J.DEAD, J.SKIPPED}


# ---- issue 8: refusals that do not burn retries, log flags, who holds an attempt ----------------


def test_a_permanent_failure_is_dead_at_once_whatever_retries_are_left(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("bomb", retries=3), spec("child", "bomb")])
    rec = h.s.job("r", "bomb")
    acts = h._call("job_finished", "w", K("r", "bomb", 1), 127, 5.0, "project archive refused", permanent=True)
    assert rec.state is J.DEAD and rec.attempts == 1 and rec.failures == 1 and rec.due_at is None
    assert rec.error == "project archive refused" and h.s.next_due() is None
    assert h.st("r", "child") is J.SKIPPED and RunFinished("r", RunState.FAILED) in acts
    assert not dispatched(acts)


def test_a_permanent_flag_on_a_stale_or_successful_attempt_changes_nothing(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("a", retries=2)])
    h._call("job_finished", "w", K("r", "a", 7), 1, 1.0, None, permanent=True)  # not its current attempt
    assert h.st("r", "a") is J.RUNNING
    h._call("job_finished", "w", K("r", "a", 1), 0, 2.0, None, permanent=True)
    assert h.st("r", "a") is J.COMPLETED


def test_log_flags_are_journaled_once(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("a")])
    acts = h._call("log_flagged", "r", "a", "log_truncated", 1.0)
    assert Journal("r", "a") in acts and h.s.job("r", "a").status()["log_truncated"] is True
    assert not of(h._call("log_flagged", "r", "a", "log_truncated", 2.0), Journal)
    assert not h._call("log_flagged", "r", "nope", "log_incomplete", 2.0)
    assert h.s.job("r", "a").state_dict()["log_truncated"] is True


def test_a_worker_holds_an_attempt_until_it_reports_it_even_when_cancelled(h: Harness) -> None:
    h.worker("w")
    h.worker("other")
    h.submit("r", [spec("a")])
    rec = h.s.job("r", "a")
    key = K("r", "a", rec.attempts)
    holder = rec.worker
    assert holder is not None
    assert h.s.holds(holder, key) and not h.s.holds("other" if holder == "w" else "w", key)
    assert not h.s.holds(holder, K("r", "a", 2)) and not h.s.holds("ghost", key)
    h.cancel("r", "a")
    assert h.s.holds(holder, key)  # the tail of its output still counts
    h.report(holder, "r", "a", 1, code=143)
    assert not h.s.holds(holder, key)


# ---- attempt history (the UI's timeline, `titan status --json`) ----------------------------------------


def test_every_attempt_is_kept_with_its_worker_times_and_outcome(h: Harness) -> None:
    h.worker("w1", slots=1)
    h.submit("r", [spec("a", retries=2)], now=1.0)
    h._call("job_started", "w1", K("r", "a", 1), 1.5)
    h.finish("r", "a", code=3, now=2.0)  # attempt 1 fails: retried after the backoff
    h.tick(10.0)  # attempt 2 dispatched to w1
    h.lost("w1", now=11.0)  # attempt 2 lost with its worker: no exit code, no retry used
    h.worker("w2", slots=1, now=12.0)  # attempt 3
    h.finish("r", "a", code=0, now=13.0)
    log = h.s.job("r", "a").status()["attempts_log"]
    assert [(e["attempt"], e["worker"], e["outcome"], e["exit_code"]) for e in log] == [
        (1, "w1", "FAILED", 3), (2, "w1", "LOST", None), (3, "w2", "COMPLETED", 0)]
    assert log[0]["started_at"] == 1.5 and log[0]["finished_at"] == 2.0
    assert log[1]["dispatched_at"] == 10.0 and log[1]["finished_at"] == 11.0
    assert log[2]["dispatched_at"] == 12.0 and log[2]["finished_at"] == 13.0
    assert h.s.job("r", "a").attempts == 3 and h.s.job("r", "a").failures == 1


def test_a_job_run_once_journals_no_history(h: Harness) -> None:
    h.worker("w")
    h.submit("r", [spec("a")])
    h.finish("r", "a", now=1.0)
    rec = h.s.job("r", "a")
    assert "history" not in rec.state_dict()  # nothing extra in the journal for the common case
    assert [e["outcome"] for e in rec.status()["attempts_log"]] == ["COMPLETED"]
