"""Submissions the client would refuse, sent raw to a real broker: each is an `invalid` error naming the
problem, never an "internal" one or a job that fails at every attempt; the largest allowed submission
is taken without the broker falling silent for its workers (issue 8)."""

from __future__ import annotations

import math
import re
import time
from typing import Any

import pytest

from client.cluster import LocalCluster
from client.connection import Connection
from tests.helpers import wait_until
from titan_zmq import defaults
from titan_zmq.errors import InvalidRequest
from titan_zmq.protocol import Op

OK = {"id": "a", "command": ["true"]}


def chain(count: int) -> list[dict[str, Any]]:
    """``count`` jobs of `true`, each depending on the one before (the shape of the issue's 50,000)."""
    return [{"id": f"j{i}", "command": ["true"], **({"depends_on": [f"j{i - 1}"]} if i else {})}
            for i in range(count)]


@pytest.mark.parametrize(("body", "needle"), [
    ({"jobs": [OK | {"command": "echo 'x"}]}, "jobs[0].command: cannot split"),
    ({"jobs": [OK | {"priority": 2**64 - 1}]}, "jobs[0].priority: expected integer from"),
    ({"jobs": [OK | {"retries": 2**63}]}, "jobs[0].retries: expected non-negative integer"),
    ({"jobs": [OK | {"delay": math.inf}]}, "jobs[0].delay: expected non-negative number"),
    ({"jobs": [OK | {"delay": math.nan}]}, "jobs[0].delay: expected non-negative number"),
    ({"jobs": [OK | {"file": "a.py", "script": b"print(1)"}]}, "give a file or a command, not both"),
    ({"jobs": [{"id": "a", "file": "x.tar.gz", "project": "../../../tmp"}]}, "jobs[0].project: expected sha256"),
    ({"jobs": [OK | {"env": {"A=B": "x"}}]}, "is not a variable name"),
    ({"jobs": [OK | {"env": {"A\x00B": "x"}}]}, "is not a variable name"),
    ({"jobs": [OK | {"args": ["a\x00b"]}]}, "jobs[0].args[0]: contains a NUL byte"),
    ({"jobs": [OK | {"args": ["x" * 1024 * 1024]}]}, "jobs[0].args[0]: 1048576 bytes, over the cap"),
    ({"jobs": [OK | {"hitl_message": "q" * 100_000}]}, "jobs[0].hitl_message: expected non-empty string"),
    ({"jobs": [OK], "name": "n" * 1024 * 1024}, "name: expected non-empty string of at most 256"),
    ({"jobs": [OK], "agent_run_id": "a" * 1024 * 1024}, "agent_run_id: expected non-empty string"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_raw_submissions_the_client_would_refuse_are_invalid_at_the_broker(cluster: LocalCluster,
                                                                              body: dict[str, Any], needle: str):
    conn = Connection(cluster.broker_addr, timeout=30)
    try:
        with pytest.raises(InvalidRequest) as info:
            conn.request(Op.SUBMIT_DAG, {"name": "raw"} | body)
        assert needle in str(info.value) and len(str(info.value)) < 500, str(info.value)
        with pytest.raises(InvalidRequest, match=re.escape(needle.replace("jobs[0]", "job"))):
            conn.request(Op.SUBMIT_JOB, {"name": body.get("name", "raw"), "job": body["jobs"][0],
                                         **({"agent_run_id": body["agent_run_id"]} if "agent_run_id" in body else {})})
    finally:
        conn.close()
    with cluster.client() as c:  # and the broker goes on serving
        assert c.ping()


def silences(cluster: LocalCluster) -> list[str]:
    """What the worker and broker logged about a silent peer."""
    return [line for proc in cluster.procs.values() for line in proc.output().splitlines() if "silent" in line]


@pytest.mark.timeout(240)
def test_a_50000_job_submission_is_refused_at_once_and_no_worker_hears_silence(make_cluster):
    cluster = make_cluster(workers=1)
    conn = Connection(cluster.broker_addr, timeout=60)
    try:
        started = time.monotonic()
        with pytest.raises(InvalidRequest, match="jobs: 50000 jobs, over the cap of 20000 per submission"):
            conn.request(Op.SUBMIT_DAG, {"name": "huge", "jobs": chain(50_000)})
        refused_in = time.monotonic() - started
    finally:
        conn.close()
    with cluster.client() as c:
        assert c.runs() == []  # nothing of it was kept
    time.sleep(defaults.HEARTBEAT_INTERVAL * defaults.HEARTBEAT_LIVENESS + 1)  # a silence would be logged by now
    assert not silences(cluster), silences(cluster)
    print(f"50,000-job submission refused in {refused_in:.2f}s")


@pytest.mark.timeout(300)
def test_the_largest_allowed_submission_keeps_heartbeats_flowing(make_cluster):
    cluster = make_cluster(workers=1)
    body = {"name": "largest", "jobs": chain(defaults.MAX_JOBS_PER_SUBMISSION)}
    conn = Connection(cluster.broker_addr, timeout=60)
    try:
        started = time.monotonic()
        run_id = conn.request(Op.SUBMIT_DAG, body).body["run_id"]
        accepted_in = time.monotonic() - started
    finally:
        conn.close()
    with cluster.client() as c:
        # the chain is moving and a whole liveness window has passed since the submission
        wait_until(lambda: c.status(run_id, summary=True)["counts"].get("COMPLETED", 0) >= 10
                   and time.monotonic() - started > defaults.HEARTBEAT_INTERVAL * defaults.HEARTBEAT_LIVENESS + 1,
                   timeout=120, interval=0.2, what="the chain to move")
        assert len(c.workers()) == 1
        c.cancel(run_id)
    assert not silences(cluster), silences(cluster)
    print(f"{defaults.MAX_JOBS_PER_SUBMISSION}-job chain accepted by the broker in {accepted_in:.2f}s")
