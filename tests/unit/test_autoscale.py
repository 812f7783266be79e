"""The autoscaler's decisions with an injected clock, and the scheduler's side of draining (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from client.autoscale import Autoscaler, parse_pool
from titan_zmq.attempt import AttemptKey
from titan_zmq.broker.actions import Dispatch
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.jobspec import parse_job


def worker(name: str, running: int = 0, permanent: bool = False, caps: tuple[str, ...] = ("GENERAL",),
           draining: bool = False) -> dict[str, Any]:
    return {"id": name, "capabilities": list(caps), "running": [["r", f"j{i}"] for i in range(running)],
            "permanent": permanent, "draining": draining, "slots": 1}


def stats(queued: int = 0, wait: float = 0.0, free: int = 0, launching: list[dict[str, Any]] | None = None,
          launched: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"queues": {"GENERAL": {"queued": queued, "oldest_wait": wait, "free_slots": free}},
            "launching": launching or [], "launched": launched or []}


def test_pools_parse() -> None:
    assert parse_pool("gpu:0:2").cap == "GPU"
    for bad in ("GENERAL", "GENERAL:a:2", "GENERAL:3:2", "GENERAL:0:0", ":1:2"):
        with pytest.raises(ValueError):
            parse_pool(bad)


def test_scale_up_only_after_the_wait_and_with_no_free_slot() -> None:
    a = Autoscaler([parse_pool("GENERAL:1:3")], scale_up_after=2.0, idle_timeout=5.0, slots=1)
    ws = [worker("perm", running=1, permanent=True)]
    assert a.decide(stats(queued=10, wait=1.9), ws, 100.0) == []
    assert a.decide(stats(queued=10, wait=2.5, free=1), ws, 100.0) == []
    (up,) = a.decide(stats(queued=10, wait=2.5), ws, 100.0)
    assert up.kind == "launch" and up.count == 2 and "waited 2.5s" in up.reason  # never above max (3)
    # a launch still coming up: no second one
    assert a.decide(stats(queued=10, wait=3.0, launching=[{"name": "l1", "capabilities": ["GENERAL"]}]), ws, 101) == []
    full = ws + [worker("e1", 1), worker("e2", 1)]
    assert a.decide(stats(queued=10, wait=9.0), full, 102.0) == []  # at max


def test_below_min_launches_at_once() -> None:
    a = Autoscaler([parse_pool("GPU:1:1")], slots=1)
    (up,) = a.decide({"queues": {}, "launching": [], "launched": []}, [], 0.0)
    assert up.kind == "launch" and up.pool == "GPU" and "below min" in up.reason


def test_idle_ephemeral_workers_drain_after_the_timeout_never_below_min_never_permanent() -> None:
    a = Autoscaler([parse_pool("GENERAL:1:3")], idle_timeout=5.0)
    ws = [worker("perm", permanent=True), worker("e1"), worker("e2")]
    assert a.decide(stats(), ws, 100.0) == []  # idle clocks start
    assert a.decide(stats(), ws, 105.0) == []  # not longer than the timeout yet
    drains = a.decide(stats(), ws, 105.5)
    assert sorted(d.worker or "" for d in drains) == ["e1", "e2"] and all(d.kind == "drain" for d in drains)
    # only the permanent one is left and it is the min: nothing more
    assert a.decide(stats(), [worker("perm", permanent=True)], 200.0) == []
    # min 2 with two ephemeral workers: one may go, the other stays
    b = Autoscaler([parse_pool("GENERAL:2:3")], idle_timeout=1.0)
    two = [worker("e1"), worker("e2"), worker("e3")]
    b.decide(stats(), two, 0.0)
    assert len(b.decide(stats(), two, 2.0)) == 1


def test_a_busy_worker_or_a_waiting_queue_keeps_workers() -> None:
    a = Autoscaler([parse_pool("GENERAL:0:3")], idle_timeout=5.0, scale_up_after=100.0)
    a.decide(stats(), [worker("e1")], 0.0)
    assert a.decide(stats(), [worker("e1", running=1)], 10.0) == []  # busy: its idle clock restarts
    assert a.decide(stats(), [worker("e1")], 14.0) == []
    assert a.decide(stats(queued=1, wait=1.0), [worker("e1")], 30.0) == []  # jobs wait (for another reason)
    assert [d.worker for d in a.decide(stats(), [worker("e1")], 30.0)] == ["e1"]


def test_failed_launches_back_off_and_never_loop() -> None:
    a = Autoscaler([parse_pool("GENERAL:0:3")], scale_up_after=0.0, slots=1)
    waiting = stats(queued=5, wait=1.0)
    assert a.decide(waiting, [], 0.0)[0].kind == "launch"
    a.failed("GENERAL", 0.0, "launch refused: boom")
    assert a.decide(waiting, [], 0.5) == []
    assert a.decide(waiting, [], 1.1)[0].kind == "launch"
    a.failed("GENERAL", 1.1, "boom")
    assert a.decide(waiting, [], 2.5) == [] and a.decide(waiting, [], 3.2)[0].kind == "launch"
    # a launched process that exited before registering counts as a failure, once
    a.launched("GENERAL", "l1", 4.0, "test")
    gone = stats(queued=5, wait=1.0, launched=[{"name": "l1", "capabilities": ["GENERAL"], "exit_code": 1,
                                                 "started_at": 4.0, "registered": False}])
    assert a.decide(gone, [], 4.5) == []
    assert a.state["GENERAL"].failures == 3
    a.decide(gone, [], 30.0)
    assert a.state["GENERAL"].failures == 3
    notes = a.take_notes()
    assert [n["action"] for n in notes].count("failed") == 3 and any(n["action"] == "backoff" for n in notes)


def test_a_draining_worker_gets_no_new_jobs_and_the_figures_say_what_waits() -> None:
    s = Scheduler()
    s.register_worker("w1", ["GENERAL"], 1, 0.0)
    s.register_worker("w2", ["GENERAL"], 1, 0.0)
    s.drain_worker("w2", 0.0)
    jobs = [parse_job({"id": f"j{i}", "command": ["true"]}) for i in range(3)]
    actions = s.submit("r", "r", jobs, 1.0)
    assert {a.worker for a in actions if isinstance(a, Dispatch)} == {"w1"}
    fig = s.queue_figures(4.0)["GENERAL"]
    assert fig["queued"] == 2 and fig["oldest_wait"] == 3.0 and fig["free_slots"] == 0 and fig["workers"] == 1
    assert s.draining("w2") and not s.draining("w1")
    # the draining worker leaves cleanly; w1's attempt ends; the next job goes to w1 only
    s.worker_lost("w2", 5.0)
    out = s.job_finished("w1", AttemptKey("r", "j0", 1), 0, 6.0)
    assert [a.worker for a in out if isinstance(a, Dispatch)] == ["w1"]


def test_a_worker_stopped_now_gives_its_attempts_back_without_a_failure() -> None:
    s = Scheduler()
    s.register_worker("w1", ["GENERAL"], 1, 0.0)
    s.submit("r", "r", [parse_job({"id": "a", "command": ["true"], "retries": 0})], 1.0)
    s.drain_worker("w1", 2.0)
    s.register_worker("w2", ["GENERAL"], 1, 2.5)
    out = s.worker_lost("w1", 3.0, "STOPPED")
    rec = s.job("r", "a")
    assert rec.failures == 0 and rec.history[-1][-1] == "STOPPED"
    assert [a.worker for a in out if isinstance(a, Dispatch)] == ["w2"] and rec.attempts == 2


def test_every_worker_answers_to_its_own_tag() -> None:
    s = Scheduler()
    s.register_worker("w1", ["GENERAL"], 1, 0.0)
    s.register_worker("w2", ["GENERAL"], 1, 0.0)
    out = s.submit("r", "r", [parse_job({"id": "a", "command": ["true"], "requirement": "@w2"})], 1.0)
    assert [a.worker for a in out if isinstance(a, Dispatch)] == ["w2"]
    assert "@W2" not in s.queue_figures(1.0)
