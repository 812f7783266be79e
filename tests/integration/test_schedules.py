"""Cron schedules against real processes (issue 11, acceptance 6): on time, catchup after the broker was
down across two ticks, never a tick twice across restarts, overlap skip."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

from client.cluster import LocalCluster
from tests.helpers import wait_until, write_pipeline
from titan_zmq.errors import BrokerUnavailable

pytestmark = pytest.mark.timeout(180)


def scheduled_runs(client: Any, name: str) -> list[dict[str, Any]]:
    return sorted((r for r in client.runs(limit=None) if r.get("schedule") == name), key=lambda r: r["tick"])


def pipeline(tmp: Path, name: str, cron: str, command: list[str], **options: Any) -> Path:
    return write_pipeline(tmp / name, {"name": name, "schedule": {"cron": cron, **options},
                                       "jobs": [{"id": "a", "command": command, "retries": 0}]})


def test_a_seconds_cron_fires_each_tick_on_time_and_pause_stops_it(make_cluster: Any, tmp_path: Path) -> None:
    cluster = make_cluster(workers=1, slots=4)
    with cluster.client() as c:
        s = c.add_schedule(pipeline(tmp_path, "every-second", "* * * * * *", ["true"], overlap="allow"))
        assert s["next_fire"] is not None and s["next_fire"] - time.time() <= 1.01
        runs = wait_until(lambda: (r := scheduled_runs(c, "every-second")) and len(r) >= 3 and r, timeout=30,
                          what="three runs of a per-second schedule")
        ticks = [r["tick"] for r in runs]
        assert all(t == math.floor(t) for t in ticks) and len(set(ticks)) == len(ticks), ticks
        for r in runs:  # fired on time: within a second of its tick (2 shared cores)
            assert 0 <= r["created_at"] - r["tick"] < 1.0, (r["run_id"], r["created_at"] - r["tick"])
        c.pause_schedule("every-second")
        paused_at = time.time()
        time.sleep(2.5)
        late = [r for r in scheduled_runs(c, "every-second") if r["created_at"] > paused_at + 0.2]
        assert not late, f"runs fired while paused: {late}"
        (view,) = c.schedules()
        assert view["enabled"] is False and view["next_fire"] is None and view["last_run"]
        assert view["history"][0]["outcome"] == "fired"
        run = c.run_schedule_now("every-second")  # run-now works while paused
        st = run.wait(30)
        assert st["state"] == "SUCCEEDED" and st["schedule"] == "every-second"
        c.remove_schedule("every-second")
        assert c.schedules() == []


def answers(client: Any) -> bool:
    try:
        return bool(client.schedules())
    except BrokerUnavailable:
        return False


def wait_fired(client: Any, name: str, after: float) -> float:
    """The first tick fired after ``after`` (the schedule's last_tick once it moves past it)."""
    def fired() -> float | None:
        (s,) = [s for s in client.schedules() if s["name"] == name]
        return s["last_tick"] if s["last_tick"] and s["last_tick"] > after and s["last_run"] else None
    return float(wait_until(fired, timeout=30, what=f"a tick of {name} after {after}"))


@pytest.mark.parametrize("catchup, expected", [("none", 0), ("last", 1), ("all", 2)])
def test_broker_down_across_two_ticks_catchup_decides_and_no_tick_fires_twice(
        make_cluster: Any, tmp_path: Path, catchup: str, expected: int) -> None:
    cluster: LocalCluster = make_cluster(workers=1, slots=4)
    name = f"catchup-{catchup}"
    period = 4
    with cluster.client() as c:
        c.add_schedule(pipeline(tmp_path, name, f"* * * * * */{period}", ["true"], catchup=catchup, overlap="allow"))
        tk = wait_fired(c, name, time.time() - 1)  # a tick fired and journaled
        # crash the broker right after it, and keep it down across the next two ticks
        cluster.procs["broker"].kill()
        killed = time.time()
        assert killed < tk + period, "the broker was killed too late for this test's timing"
        restart = tk + 2 * period + 0.1
        time.sleep(max(0.0, restart - time.time()))
        cluster.start_broker()
        wait_until(lambda: answers(c), timeout=30, what="the restarted broker")
        missed = [tk + period, tk + 2 * period]
        runs = wait_until(lambda: (r := scheduled_runs(c, name)) and r[-1]["tick"] >= tk + 3 * period and r,
                          timeout=30, what="the first tick after the restart")
        ticks = [r["tick"] for r in runs]
        assert len(ticks) == len(set(ticks)), f"a tick fired twice: {ticks}"
        fired_missed = [t for t in ticks if tk < t <= restart]
        assert len(fired_missed) == expected, (catchup, ticks, missed)
        if catchup == "last":
            assert fired_missed == [missed[-1]]
        assert tk in ticks and tk + 3 * period in ticks  # the tick before the crash once, the next on time
        view = c.schedules()[0]
        if expected < 2:
            assert any("missed" in h["outcome"] for h in view["history"]), view["history"]


def test_overlap_skip_does_not_start_a_run_while_the_previous_one_runs(make_cluster: Any, tmp_path: Path) -> None:
    cluster = make_cluster(workers=1, slots=4)
    with cluster.client() as c:
        c.add_schedule(pipeline(tmp_path, "slow", "* * * * * *", ["sleep", "2.5"], overlap="skip"))
        wait_until(lambda: len([r for r in scheduled_runs(c, "slow") if r["state"] != "RUNNING"]) >= 2, timeout=40,
                   what="two finished runs of the slow schedule")
        c.pause_schedule("slow")
        runs = [c.status(r["run_id"]) for r in scheduled_runs(c, "slow")]
        spans = sorted((r["created_at"], r["finished_at"] or math.inf) for r in runs)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end, f"runs overlapped: {spans}"
        history = c.schedules()[0]["history"]
        assert any("still running" in h["outcome"] for h in history), history
