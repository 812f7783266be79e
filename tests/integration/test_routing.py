"""Capability routing, priority, least-connection spread and slot limits on real workers."""

from __future__ import annotations

from pathlib import Path

from client import TitanJob
from tests.helpers import RECORD_PY, events, job_state, wait_until, write_pipeline


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    best = cur = 0
    for _, d in points:
        cur += d
        best = max(best, cur)
    return best


def test_gpu_job_waits_without_blocking_general_jobs_then_runs_on_a_gpu_worker(make_cluster, tmp_path: Path):
    cluster = make_cluster(workers=1)
    with cluster.client() as c:
        (tmp_path / "hi.py").write_text("import os; print('on', os.environ['TITAN_WORKER'])\n")
        gpu = c.submit_job(TitanJob("train", filename="hi.py", requirement="GPU"), base_dir=tmp_path)
        general = [c.submit_job(TitanJob(f"g{i}", filename="hi.py"), base_dir=tmp_path) for i in range(5)]
        for run in general:
            assert run.wait(timeout=60)["state"] == "SUCCEEDED"
        assert c.status(gpu.run_id)["jobs"]["train"]["state"] == "QUEUED"
        cluster.start_worker("gpu-worker", caps=["GPU"])
        st = gpu.wait(timeout=60)
        assert st["state"] == "SUCCEEDED"
        assert st["jobs"]["train"]["worker"] == "gpu-worker"
        assert c.logs(gpu.run_id, "train") == ["on gpu-worker"]


def test_priority_highest_first_fifo_among_equals(make_cluster, tmp_path: Path):
    cluster = make_cluster(workers=1, slots=1)
    (tmp_path / "record.py").write_text(RECORD_PY)
    with cluster.client() as c:
        blocker = c.submit_job(TitanJob("blocker", filename="record.py", args=["blocker", "1.5"]), base_dir=tmp_path)
        # the only slot is taken, so everything below queues
        wait_until(lambda: job_state(c, blocker.run_id, "blocker") == "RUNNING", what="blocker running")
        order = [("low1", 1), ("high1", 10), ("mid", 5), ("low2", 1), ("high2", 10)]
        jobs = [TitanJob(name, filename="record.py", args=[name], priority=p) for name, p in order]
        run = c.submit_dag("prio", jobs, base_dir=tmp_path)
        st = run.wait(timeout=60)
        assert st["state"] == "SUCCEEDED"
        starts = sorted((j["started_at"], name) for name, j in st["jobs"].items())
        assert [name for _, name in starts] == ["high1", "high2", "mid", "low1", "low2"]


def test_two_workers_share_eight_jobs_four_each(make_cluster, tmp_path: Path):
    cluster = make_cluster(workers=2, slots=4)
    (tmp_path / "record.py").write_text(RECORD_PY)
    with cluster.client() as c:
        run = c.submit_dag("spread", [TitanJob(f"s{i}", filename="record.py", args=[f"s{i}", "2"]) for i in range(8)],
                           base_dir=tmp_path)
        st = run.wait(timeout=60)
    assert st["state"] == "SUCCEEDED"
    per_worker: dict[str, int] = {}
    for job in st["jobs"].values():
        per_worker[job["worker"]] = per_worker.get(job["worker"], 0) + 1
    assert sorted(per_worker.values()) == [4, 4], per_worker
    ev = events(cluster, run.run_id)
    spans = {n: [0.0, 0.0] for n, *_ in ev}
    for name, what, ts, *_ in ev:
        spans[name][0 if what == "start" else 1] = ts
    assert max_overlap([(s, e) for s, e in spans.values()]) == 8  # all ran at once


def test_one_four_slot_worker_never_runs_more_than_four(make_cluster, tmp_path: Path):
    cluster = make_cluster(workers=1, slots=4)
    path = write_pipeline(tmp_path, {"name": "slots", "jobs": [
        {"id": f"j{i:02d}", "file": "record.py", "args": f"j{i:02d} 0.6"} for i in range(12)]}, {"record.py": RECORD_PY})
    with cluster.client() as c:
        run = c.submit_yaml(path)
        assert run.wait(timeout=60)["state"] == "SUCCEEDED"
    ev = events(cluster, run.run_id)
    spans = {n: [0.0, 0.0] for n, *_ in ev}
    for name, what, ts, *_ in ev:
        spans[name][0 if what == "start" else 1] = ts
    assert len(spans) == 12
    assert max_overlap([(s, e) for s, e in spans.values()]) == 4


def test_workers_json_lists_running_jobs(cluster, client, tmp_path: Path):
    (tmp_path / "sleep.py").write_text("import time; time.sleep(30)\n")
    run = client.submit_job(TitanJob("sleeper", filename="sleep.py"), base_dir=tmp_path)
    try:
        busy = wait_until(lambda: [w for w in client.workers() if [run.run_id, "sleeper"] in w["running"]],
                          what="a worker running the sleeper")
        assert len(busy) == 1
        w = busy[0]
        assert w["slots"] == 4 and w["capabilities"] == ["GENERAL"] and w["pid"] > 0 and w["host"]
    finally:
        client.cancel(run.run_id)
