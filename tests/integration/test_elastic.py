"""Elastic workers against real processes (issue 11, acceptance 7): drain, stop --now, launch (here and
--on a worker) and the autoscaler growing and shrinking a pool. Workers the broker launched are killed
at the end by pid if they are still there (they are ours)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from client.cluster import LocalCluster
from client.job import TitanJob
from tests.helpers import RECORD_PY, events, process_gone, wait_until

pytestmark = pytest.mark.timeout(240)


def launched_pids(cluster: LocalCluster) -> list[int]:
    try:
        with cluster.client(timeout=3) as c:
            return [lw["pid"] for lw in c.stats()["launched"] if lw.get("pid")]
    except Exception:
        return []


@pytest.fixture
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Clusters whose launched workers are killed at the end (the broker starts them detached)."""
    started: list[tuple[LocalCluster, set[int]]] = []

    def make(**kwargs: Any) -> LocalCluster:
        cluster = LocalCluster(tmp_path_factory.mktemp("elastic"), broker_args=["--retry-backoff", "0.2"], **kwargs)
        started.append((cluster, set()))
        return cluster.start()

    yield make
    for cluster, _ in started:
        pids = launched_pids(cluster)
        cluster.stop()
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE and "titan_zmq.worker" in " ".join(proc.cmdline()):
                    os.kill(pid, signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass


def record_jobs(tmp: Path, n: int, secs: float, prefix: str = "j") -> list[TitanJob]:
    script = tmp / "record.py"
    script.write_text(RECORD_PY)
    return [TitanJob(f"{prefix}{i}", filename=str(script), args=[f"{prefix}{i}", str(secs)], retries=0) for i in range(n)]


def titan(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli", *args, "--broker", cluster.broker_addr],
                          capture_output=True, text=True, timeout=60)


def test_drain_of_a_busy_worker_finishes_its_jobs_runs_nothing_twice_and_exits_0(clusters: Any,
                                                                                   tmp_path: Path) -> None:
    cluster = clusters(workers=2, slots=2)
    with cluster.client() as c:
        run = c.submit_dag("drain", record_jobs(tmp_path, 2, 3.0, "busy"))
        st = wait_until(lambda: (s := c.status(run.run_id)) and all(j["state"] == "RUNNING" for j in s["jobs"].values())
                        and s, timeout=30, what="both jobs running")
        busy = st["jobs"]["busy0"]["worker"]
        out = titan(cluster, "worker", "drain", busy)
        assert out.returncode == 0 and "draining" in out.stdout, out
        assert [w for w in c.workers() if w["id"] == busy][0]["draining"] is True
        later = c.submit_dag("after", record_jobs(tmp_path, 4, 0.1, "late"))
        late = later.wait(60)
        assert {j["worker"] for j in late["jobs"].values()} == {"worker1", "worker2"} - {busy}
        final = run.wait(60)
        assert final["state"] == "SUCCEEDED"
        assert all(j["attempts"] == 1 for j in final["jobs"].values())
        starts = [e for e in events(cluster, run.run_id) if e[1] == "start"]
        assert sorted(e[0] for e in starts) == ["busy0", "busy1"] and all(e[3] == 1 for e in starts)
        proc = cluster.procs[busy]
        assert proc.popen is not None and proc.popen.wait(30) == 0, proc.output()[-2000:]
        wait_until(lambda: busy not in [w["id"] for w in c.workers()], timeout=10, what="the drained worker leaving")


def test_stop_now_requeues_its_jobs_elsewhere_without_a_failure(clusters: Any, tmp_path: Path) -> None:
    cluster = clusters(workers=2, slots=1)
    with cluster.client() as c:
        run = c.submit_job(TitanJob("long", command=["sleep", "4"], retries=0))
        st = wait_until(lambda: (s := c.status(run.run_id)) and s["jobs"]["long"]["state"] == "RUNNING" and s,
                        timeout=30, what="the job running")
        first = st["jobs"]["long"]["worker"]
        c.stop_worker(first, now=True)
        assert cluster.procs[first].popen is not None and cluster.procs[first].popen.wait(30) == 0
        final = run.wait(60)
        job = final["jobs"]["long"]
        assert final["state"] == "SUCCEEDED" and job["attempts"] == 2 and job["worker"] != first
        assert job["attempts_log"][0]["outcome"] == "STOPPED", job["attempts_log"]


def test_launch_adds_a_worker_here_and_on_another_worker(clusters: Any, tmp_path: Path) -> None:
    cluster = clusters(workers=1, slots=2)
    with cluster.client() as c:
        out = titan(cluster, "worker", "launch", "--capability", "GPU", "--slots", "1")
        assert out.returncode == 0, out
        name = out.stdout.split()[0]
        w = wait_until(lambda: [w for w in c.workers() if w["id"] == name], timeout=30, what="the launched worker")[0]
        assert w["kind"] == "ephemeral" and w["capabilities"] == ["GPU"] and w["slots"] == 1
        assert c.submit_job(TitanJob("gpu", command=["true"], requirement="GPU")).wait(30)["jobs"]["gpu"][
            "worker"] == name
        nested = c.launch_worker(["NESTED"], slots=1, on="worker1", name="nested1")
        wait_until(lambda: "nested1" in [w["id"] for w in c.workers()], timeout=30, what="the worker launched on worker1")
        assert c.submit_job(TitanJob("n", command=["true"], requirement="NESTED")).wait(30)["jobs"]["n"][
            "worker"] == "nested1"
        hosted = c.status(nested["run_id"])["jobs"]["worker"]
        assert hosted["type"] == "service" and hosted["state"] == "READY" and hosted["worker"] == "worker1", hosted
        c.drain_worker("nested1")
        host = c.wait(nested["run_id"], 30)  # the service that ran it ends with it (a clean exit: no restart)
        assert host["state"] == "SUCCEEDED", host
        assert host["jobs"]["worker"]["attempts"] == 1, host
        c.drain_worker(name)
        pid = w["pid"]
        wait_until(lambda: process_gone(pid), timeout=30, what="the launched worker exiting")
        assert [lw["exit_code"] for lw in c.stats()["launched"] if lw["name"] == name] in ([0], [None])


def test_autoscale_grows_the_pool_for_30_jobs_and_shrinks_it_to_the_permanent_worker(clusters: Any,
                                                                                      tmp_path: Path) -> None:
    cluster = clusters(workers=1, slots=1, permanent=True, autoscale=[
        "--pool", "GENERAL:1:3", "--scale-up-after", "1", "--idle-timeout", "3", "--worker-slots", "1",
        "--interval", "0.2"])
    with cluster.client() as c:
        run = c.submit_dag("thirty", record_jobs(tmp_path, 30, 1.0))
        final = run.wait(150)
        assert final["state"] == "SUCCEEDED"
        assert all(j["attempts"] == 1 for j in final["jobs"].values())
        recs = events(cluster, run.run_id)
        starts = sorted(e[0] for e in recs if e[1] == "start")
        assert starts == sorted(f"j{i}" for i in range(30)), "every job ran exactly once"
        used = {e[4] for e in recs}
        assert "worker1" in used and len(used) >= 2, f"jobs did not spread: {used}"
        launched = c.stats()["launched"]
        assert 1 <= len(launched) <= 2
        # idle: the ephemeral workers drain and exit, the permanent one stays
        wait_until(lambda: [w["id"] for w in c.workers()] == ["worker1"], timeout=60,
                   what="only the permanent worker left")
        wait_until(lambda: all(lw["exit_code"] == 0 for lw in c.stats()["launched"]), timeout=30,
                   what="the launched workers exiting 0")
        decisions = c.stats()["autoscale"]["decisions"]
        kinds = [d["action"] for d in decisions]
        assert "launch" in kinds and "drain" in kinds, decisions
        assert all(d["reason"] for d in decisions)
        assert any("waited" in d["reason"] for d in decisions if d["action"] == "launch")
        assert cluster.procs["worker1"].alive()
        out = titan(cluster, "workers")
        assert "permanent" in out.stdout
