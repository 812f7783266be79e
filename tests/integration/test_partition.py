"""Partition: a worker in its own network namespace is cut off mid-job, then comes back."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.cluster import LocalCluster
from tests.helpers import RECORD_PY, job_state, records, wait_until, write_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=20)


@pytest.fixture
def netns() -> Iterator[tuple[str, str, str]]:
    """A namespace linked to the host by a veth pair: (namespace, host-side link, host address)."""
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"titan-{tag}", f"th{tag}", f"tn{tag}"
    octet = int(tag[:2], 16) % 200 + 20
    host_ip, ns_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"
    try:
        sh("ip", "netns", "add", ns)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot create a network namespace here: {exc}")
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_if, host_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


@pytest.mark.timeout(180)
def test_cut_off_worker_job_is_requeued_and_its_stale_execution_is_not_recorded(netns, tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch):
    ns, host_if, host_ip = netns
    monkeypatch.setenv("TITAN_INSECURE", "1")  # store and broker bind the veth address, not loopback
    cluster = LocalCluster(tmp_path / "cluster", workers=0, host=host_ip)
    try:
        cluster.start()
        cluster._start("nsworker", ["ip", "netns", "exec", ns, *cluster._py(
            "titan_zmq.worker", "--broker", cluster.broker_addr, "--name", "nsworker",
            "--workspace", str(cluster.data_dir / "nswork"))])
        cluster.wait_ready(1)
        path = write_pipeline(tmp_path, {"name": "cut", "jobs": [
            {"id": "long", "file": "record.py", "args": "long 12"}]}, {"record.py": RECORD_PY})
        with cluster.client(timeout=5) as c:
            run = c.submit_yaml(path)
            wait_until(lambda: job_state(c, run.run_id, "long") == "RUNNING", what="the job on the cut-off worker")
            assert c.status(run.run_id)["jobs"]["long"]["worker"] == "nsworker"
            cluster.start_worker("worker1")
            cluster.wait_ready(2)
            sh("ip", "link", "set", host_if, "down")  # the partition
            t_cut = time.time()
            wait_until(lambda: c.status(run.run_id)["jobs"]["long"]["worker"] == "worker1", timeout=20,
                       what="the job to be re-queued onto the reachable worker")
            assert time.time() - t_cut < 8
            sh("ip", "link", "set", host_if, "up")  # the link comes back
            wait_until(lambda: any(w["id"] == "nsworker" for w in c.workers()), timeout=60,
                       what="the cut-off worker to re-register")
            st = run.wait(timeout=60)
        assert st["state"] == "SUCCEEDED"
        job = st["jobs"]["long"]
        assert job["attempts"] == 2 and job["worker"] == "worker1" and job["exit_code"] == 0
        stale = records(cluster.data_dir / "nswork", run.run_id)
        lines = stale.read_text().splitlines()
        assert any(ln.startswith("long start") for ln in lines)
        assert not any(ln.startswith("long end") for ln in lines), "the stale attempt must be killed, not finish"
        nslog = (cluster.data_dir / "logs" / "nsworker.log").read_text()
        assert "killing its process group" in nslog
    finally:
        cluster.stop()
