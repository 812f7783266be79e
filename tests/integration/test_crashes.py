"""Crash tests: kill -9 a worker, the broker or the store mid-run; nothing accepted is lost, nothing runs twice."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from client import TitanJob
from tests.helpers import RECORD_PY, events, job_state, process_gone, records, wait_until, write_pipeline
from titan_zmq.errors import StoreUnavailable

pytestmark = pytest.mark.slow

PID_JOB = """
import os, sys, time
records = os.path.join(os.environ["TITAN_SHARED_DIR"], "..", "..", "..", "records")
os.makedirs(records, exist_ok=True)
with open(os.path.join(records, os.environ["TITAN_RUN_ID"] + ".log"), "a") as f:
    f.write(f"{os.environ['TITAN_ATTEMPT']} {os.getpid()} {os.environ['TITAN_WORKER']}\\n")
time.sleep(float(sys.argv[1]))
print("finished attempt", os.environ["TITAN_ATTEMPT"])
"""


def test_killed_worker_job_completes_on_the_other_worker_with_no_orphan(make_cluster, tmp_path: Path):
    cluster = make_cluster(workers=2)
    path = write_pipeline(tmp_path, {"name": "survive", "jobs": [{"id": "long", "file": "job.py", "args": "20"}]},
                          {"job.py": PID_JOB})
    with cluster.client() as c:
        run = c.submit_yaml(path)
        pids = records(cluster.data_dir / "work", run.run_id)
        wait_until(pids.exists, what="the job to start")
        attempt, pid, worker = pids.read_text().split()
        assert attempt == "1" and not process_gone(int(pid))
        cluster.procs[worker].kill()
        wait_until(lambda: process_gone(int(pid)),
                   timeout=10, what="the dead worker's job process to be reaped")
        st = run.wait(timeout=90)
    assert st["state"] == "SUCCEEDED"
    job = st["jobs"]["long"]
    assert job["attempts"] == 2 and job["worker"] != worker
    lines = pids.read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["1", "2"]


def test_broker_kill_mid_chain_resumes_in_order_without_rerun_and_keeps_delays(make_cluster, tmp_path: Path):
    cluster = make_cluster(workers=2)
    jobs = [{"id": f"c{i}", "file": "record.py", "args": f"c{i} 1", **({"depends_on": [f"c{i-1}"]} if i else {})}
            for i in range(8)]
    jobs.append({"id": "late", "file": "record.py", "args": "late", "delay": 20})
    path = write_pipeline(tmp_path, {"name": "chain", "jobs": jobs}, {"record.py": RECORD_PY})
    with cluster.client(timeout=5) as c:
        run = c.submit_yaml(path)
        submitted = c.status(run.run_id)["created_at"]
        wait_until(lambda: job_state(c, run.run_id, "c3") == "RUNNING", timeout=30, what="c3 running")
        cluster.procs["broker"].kill()
        time.sleep(1.0)
        cluster.start_broker()
        t_restart = time.time()
        # dispatch resumes within 5 s: the chain makes progress after the restart
        wait_until(lambda: any(name in ("c4", "c5") and what == "start" and ts > t_restart
                               for name, what, ts, *_ in events(cluster, run.run_id)),
                   timeout=15, what="dispatch to resume after the restart")
        st = run.wait(timeout=90)
    assert st["state"] == "SUCCEEDED", st
    ev = events(cluster, run.run_id)
    starts = Counter(name for name, what, *_ in ev if what == "start")
    assert all(n == 1 for n in starts.values()) and len(starts) == 9, starts
    t = {(name, what): ts for name, what, ts, *_ in ev}
    for i in range(1, 8):
        assert t[f"c{i}", "start"] >= t[f"c{i-1}", "end"], f"c{i} started before c{i-1} finished"
    assert all(j["attempts"] == 1 for j in st["jobs"].values())
    assert abs(t["late", "start"] - (submitted + 20)) < 2.5, t["late", "start"] - submitted


def test_store_kill_loses_nothing_acknowledged_and_refuses_submissions_meanwhile(make_cluster, tmp_path: Path):
    cluster = make_cluster(workers=2)
    jobs = [{"id": f"s{i}", "file": "record.py", "args": f"s{i} 0.7", **({"depends_on": [f"s{i-1}"]} if i else {})}
            for i in range(6)]
    path = write_pipeline(tmp_path, {"name": "store-crash", "jobs": jobs}, {"record.py": RECORD_PY})
    other = write_pipeline(tmp_path / "o", {"name": "during", "jobs": [{"id": "x", "command": ["true"]}]})
    with cluster.client(timeout=8) as c:
        c.store_put("before", "kept")
        run = c.submit_yaml(path)
        wait_until(lambda: job_state(c, run.run_id, "s1") == "RUNNING", timeout=30, what="s1 running")
        cluster.procs["store"].kill()
        with pytest.raises(StoreUnavailable, match="store unavailable"):
            c.submit_yaml(other)
        with pytest.raises(StoreUnavailable):
            c.store_put("during", "nope")
        time.sleep(2)
        cluster.start_store()
        st = run.wait(timeout=90)
        assert st["state"] == "SUCCEEDED", st
        assert c.store_get("before") == "kept"
        after = c.submit_yaml(other)
        assert after.wait(timeout=30)["state"] == "SUCCEEDED"
        final = {j: (v["state"], v["attempts"]) for j, v in st["jobs"].items()}
    # everything acknowledged is in the journal: a broker rebuilt from the store sees the same
    cluster.procs["broker"].kill()
    cluster.start_broker()
    with cluster.client(timeout=8) as c:
        rebuilt = wait_until(lambda: _status_or_none(c, run.run_id), timeout=20, what="the restarted broker")
        assert rebuilt["state"] == "SUCCEEDED"
        assert {j: (v["state"], v["attempts"]) for j, v in rebuilt["jobs"].items()} == final
        assert c.status(after.run_id)["state"] == "SUCCEEDED"
    starts = Counter(name for name, what, *_ in events(cluster, run.run_id) if what == "start")
    assert set(starts.values()) == {1} and len(starts) == 6


def _status_or_none(c, run_id):
    try:
        return c.status(run_id)
    except Exception:
        return None


def test_wait_and_follow_survive_a_broker_restart(make_cluster, tmp_path: Path):
    cluster = make_cluster(workers=1)
    script = "import time\nfor i in range(12):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.5)\n"
    path = write_pipeline(tmp_path, {"name": "ticks", "jobs": [{"id": "t", "file": "t.py"}]}, {"t.py": script})
    with cluster.client(timeout=2) as c:
        run = c.submit_yaml(path)
        got = []
        for rec in c.follow_logs(run.run_id, "t", timeout=90):
            got.append(rec[3])
            if len(got) == 3:
                cluster.procs["broker"].kill()
                time.sleep(1)
                cluster.start_broker()
        assert c.wait(run.run_id, timeout=60)["state"] == "SUCCEEDED"
    assert got[:3] == ["tick 0", "tick 1", "tick 2"]
    # lines printed while the broker was down are lost only if no broker took them; none is duplicated
    assert len(got) == len(set(got)) and got[-1] == "tick 11"


def test_idle_workers_register_again_after_a_broker_restart(make_cluster):
    cluster = make_cluster(workers=2)
    with cluster.client(timeout=2) as c:
        cluster.procs["broker"].kill()
        cluster.start_broker()
        t0 = time.monotonic()
        wait_until(lambda: _workers_or_empty(c) == {"worker1", "worker2"}, timeout=15,
                   what="both idle workers to register with the new broker")
        assert time.monotonic() - t0 < 8
        run = c.submit_dag("after-restart", [TitanJob(f"j{i}", command=["true"]) for i in range(4)])
        assert run.wait(timeout=30)["state"] == "SUCCEEDED"


def _workers_or_empty(c) -> set[str]:
    try:
        return {w["id"] for w in c.workers()}
    except Exception:
        return set()
