"""Chaos: a 200-job DAG while workers are killed and restarted and the broker restarts twice."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from client.cluster import LocalCluster
from tests.helpers import RECORD_PY, events, write_pipeline

pytestmark = pytest.mark.slow


def chaos_dag(rng: random.Random, n: int = 200) -> list[dict]:
    """Fan-outs, fan-ins and chains: each job depends on 0-3 of the 25 jobs before it."""
    jobs = []
    for i in range(n):
        name = f"j{i:03d}"
        shape = rng.random()
        if i < 5 or shape < 0.1:
            parents = []  # a new root
        elif shape < 0.45:
            parents = [f"j{i - 1:03d}"]  # a chain link
        elif shape < 0.75:
            parents = [f"j{rng.randrange(max(0, i - 25), i):03d}"]  # fan-out from an earlier job
        else:
            parents = sorted({f"j{rng.randrange(max(0, i - 25), i):03d}" for _ in range(3)})  # a fan-in
        secs = rng.choice([0, 0, 0.5, 1, 1.5, 2])
        job = {"id": name, "file": "record.py", "args": f"{name} {secs}"}
        if parents:
            job["depends_on"] = parents
        jobs.append(job)
    return jobs


def driver(cluster: LocalCluster, rng: random.Random, stop: threading.Event, log: list[str]) -> None:
    """Kill a random worker every few seconds (restarting it); restart the broker twice."""
    start = time.monotonic()
    broker_restarts = [6.0, 16.0]
    while not stop.wait(rng.uniform(2.0, 4.0)):
        name = rng.choice(["worker1", "worker2", "worker3"])
        cluster.procs[name].kill()
        log.append(f"{time.monotonic() - start:.1f}s kill {name}")
        time.sleep(0.3)
        cluster.start_worker(name)
        if broker_restarts and time.monotonic() - start >= broker_restarts[0]:
            broker_restarts.pop(0)
            cluster.procs["broker"].kill()
            log.append(f"{time.monotonic() - start:.1f}s kill broker")
            time.sleep(0.5)
            cluster.start_broker()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [11, 22, 33])
def test_chaos_every_job_completes_once_per_attempt_in_dependency_order(make_cluster, tmp_path: Path, seed: int):
    rng = random.Random(seed)
    cluster = make_cluster(workers=3)
    jobs = chaos_dag(rng)
    path = write_pipeline(tmp_path, {"name": f"chaos-{seed}", "jobs": jobs}, {"record.py": RECORD_PY})
    stop, log = threading.Event(), []
    with cluster.client(timeout=5) as c:
        run = c.submit_yaml(path)
        chaos = threading.Thread(target=driver, args=(cluster, rng, stop, log), daemon=True)
        chaos.start()
        try:
            st = c.wait(run.run_id, timeout=240)
        finally:
            stop.set()
            chaos.join(30)
    assert st["state"] == "SUCCEEDED", (log, {j: v["state"] for j, v in st["jobs"].items() if v["state"] != "COMPLETED"})
    assert sum(1 for line in log if "broker" in line) == 2, log
    status = st["jobs"]
    assert all(j["state"] == "COMPLETED" for j in status.values())
    starts: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for name, what, ts, attempt, _worker in events(cluster, run.run_id):
        if what == "start":
            starts[name].append((attempt, ts))
    assert set(starts) == set(status), "every job executed"
    for name, execs in starts.items():
        attempts = [a for a, _ in execs]
        assert len(attempts) == len(set(attempts)), f"{name}: an attempt executed twice: {execs}"
        assert all(ts <= status[name]["finished_at"] for _, ts in execs), f"{name}: executed after its completion"
    parents = {j["id"]: j.get("depends_on", []) for j in jobs}
    for name, execs in starts.items():
        for p in parents[name]:
            assert min(ts for _, ts in execs) >= status[p]["finished_at"], f"{name} started before its parent {p}"
