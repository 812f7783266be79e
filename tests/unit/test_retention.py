"""Retention decisions with a fake clock, and the scheduler forgetting finished runs and paging runs."""

from __future__ import annotations

import pytest

from titan_zmq.attempt import AttemptKey
from titan_zmq.broker.actions import Dispatch, Kill
from titan_zmq.broker.records import RunOrder
from titan_zmq.broker.retention import Policy, Retention, parse_duration
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.errors import NotFound
from titan_zmq.jobspec import JobSpec
from titan_zmq.states import RunState

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("text, seconds", [
    ("7d", 7 * 86400), ("12h", 43200), ("30m", 1800), ("45s", 45), ("3600", 3600), ("1.5h", 5400), ("2w", 14 * 86400),
    ("0", None), ("forever", None), ("none", None),
])
def test_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7 days", "-1d", "d", "1y", "1e9"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_runs_leave_by_age_oldest_finished_first() -> None:
    r = Retention(Policy(max_age=100.0, max_runs=None))
    for i in range(5):
        r.finished(f"r{i}", at=1000.0 + i * 10)
    r.finished("r0", at=5000.0)  # reported again: keeps its first time and place
    assert r.take(1099.0, 100, lambda _: 3) == []
    assert r.take(1125.0, 100, lambda _: 3) == ["r0", "r1", "r2"]
    assert not r.due(1125.0) and len(r) == 2


def test_runs_beyond_the_count_leave_oldest_first_and_the_newest_stay() -> None:
    r = Retention(Policy(max_age=None, max_runs=3))
    r.restored([(f"r{i}", 1000.0 - i) for i in range(6)])  # read back in any order: sorted by finish
    assert r.take(0.0, 100, lambda _: 1) == ["r5", "r4", "r3"]
    assert r.take(0.0, 100, lambda _: 1) == [] and len(r) == 3


def test_a_backlog_leaves_in_slices_bounded_by_the_keys_deleted() -> None:
    r = Retention(Policy(max_age=10.0, max_runs=None))
    for i in range(100):
        r.finished(f"r{i}", at=float(i))
    slices = []
    while r.due(1000.0):
        slices.append(r.take(1000.0, 30, lambda run_id: 3))
    assert [len(s) for s in slices] == [10] * 10
    big = Retention(Policy(max_age=None, max_runs=0))
    big.finished("huge", 0.0)
    big.finished("next", 0.0)
    assert big.take(0.0, 30, lambda run_id: 50_001) == ["huge"]  # one at least, however big


def test_no_limits_keep_everything() -> None:
    r = Retention(Policy(max_age=None, max_runs=None))
    for i in range(50):
        r.finished(f"r{i}", 0.0)
    assert r.take(1e12, 1000, lambda _: 1) == []


def one_job(sched: Scheduler, run_id: str, now: float) -> None:
    sched.submit(run_id, run_id, [JobSpec(id="j", command=["true"])], now)


def test_forget_finished_drops_only_finished_runs_and_nothing_refers_to_them() -> None:
    s = Scheduler()
    s.register_worker("w", ["GENERAL"], 1, 0.0)
    one_job(s, "done", 1.0)
    s.job_finished("w", AttemptKey("done", "j", 1), 0, 2.0)
    one_job(s, "running", 3.0)
    one_job(s, "cancelled", 4.0)  # queued behind "running"
    s.cancel("cancelled", None, 5.0)
    assert s.run("done").state is RunState.SUCCEEDED
    gone = s.forget_finished(["done", "running", "cancelled", "unknown"])
    assert [r.run_id for r in gone] == ["done", "cancelled"]
    assert [r.run_id for r in s.recent_runs(10)] == ["running"] and s.run_counts() == (1, 1)
    with pytest.raises(NotFound):
        s.run("done")
    # the worker reports the old attempt again (a late report, a re-register): freed / killed, no crash
    acts = s.register_worker("w", ["GENERAL"], 2, 6.0, running=[AttemptKey("done", "j", 1),
                                                               AttemptKey("running", "j", 1)])
    assert [a.key.run_id for a in acts if isinstance(a, Kill)] == ["done"]
    assert not [a for a in acts if isinstance(a, Dispatch)]
    s.job_finished("w", AttemptKey("running", "j", 1), 0, 7.0)
    assert s.run("running").state is RunState.SUCCEEDED


def test_runs_page_newest_first_from_a_cursor_even_after_runs_left() -> None:
    s = Scheduler()
    for i in range(200):
        one_job(s, f"r{i:03d}", float(i))
        if i % 2:
            s.cancel(f"r{i:03d}", None, float(i))
    s.forget_finished([f"r{i:03d}" for i in range(1, 150, 2)])  # holes: squeezed out along the way
    seen, before = [], None
    while True:
        page = s.recent_runs(30, before=before)
        if not page:
            break
        seen += [r.run_id for r in page]
        before = page[-1].run_id
    expected = [f"r{i:03d}" for i in range(199, -1, -1) if i % 2 == 0 or i >= 150]
    assert seen == expected
    with pytest.raises(NotFound, match="retention"):
        s.recent_runs(10, before="r001")


def test_run_order_squeezes_holes_and_keeps_positions() -> None:
    order = RunOrder()
    for i in range(1000):
        order.add(f"r{i}")
    for i in range(0, 990):
        order.remove(f"r{i}")
    assert list(order.newest_first()) == [f"r{i}" for i in range(999, 989, -1)]
    assert list(order.newest_first("r995")) == ["r994", "r993", "r992", "r991", "r990"]
