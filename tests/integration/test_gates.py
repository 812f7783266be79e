"""Approval gates, the notification hook and agent runs with real processes (issue 10, acceptance 1-4, 6, 7)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from client import TitanJob
from tests.helpers import REPO, wait_until, write_pipeline
from titan_zmq.errors import GateNotPending, TitanError

TITAN = [sys.executable, "-m", "client.cli"]
SLEEP = ["python3", "-c", "import time; time.sleep(0.3)"]


def titan(*args: str, broker: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TITAN_BROKER=broker)
    return subprocess.run([*TITAN, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def gated_pipeline(tmp_path: Path, name: str, wait: float = 600, **gate: Any) -> Path:
    """a -> g (a gate node, as YAML declares it) -> b."""
    return write_pipeline(tmp_path / name, {"name": name, "jobs": [
        {"id": "a", "command": ["true"]},
        {"id": "g", "type": "gate", "hitl_message": "ship it?", "max_wait_seconds": wait, "depends_on": ["a"], **gate},
        {"id": "b", "command": ["true"], "depends_on": ["g"]},
    ]})


def pending_gate(c: Any, run_id: str, gate_id: str = "g") -> dict[str, Any]:
    gate = c.wait_for_gate(run_id, gate_id, timeout=30)
    assert gate["state"] == "AWAITING_APPROVAL", gate
    return gate


# ---- 1. a waiting gate holds no slot; titan approve releases it ---------------------------------------


def test_a_waiting_gate_frees_its_slot_and_titan_approve_releases_it(make_cluster, tmp_path: Path) -> None:
    cluster = make_cluster(workers=1, slots=1)
    b = cluster.broker_addr
    with cluster.client() as c:
        run = c.submit_yaml(gated_pipeline(tmp_path, "one"))
        gate = pending_gate(c, run.run_id)
        # the only slot of the only worker runs three other jobs while the gate waits
        others = [c.submit_job(TitanJob(f"other{i}", command=SLEEP)) for i in range(3)]
        for other in others:
            assert other.wait(timeout=30)["state"] == "SUCCEEDED"
        assert c.status(run.run_id)["jobs"]["g"]["state"] == "AWAITING_APPROVAL"
        assert c.workers()[0]["running"] == []
        listed = json.loads(titan("gates", "--run", run.run_id, "--json", broker=b).stdout)
        assert [(g["gate_id"], g["state"], g["message"]) for g in listed] == [("g", "AWAITING_APPROVAL", "ship it?")]
        before = time.time()
        out = titan("approve", run.run_id, "g", "--comment", "looks good", "--as", "alice", broker=b)
        assert out.returncode == 0, out.stderr
        assert "approved by alice" in out.stdout
        st = run.wait(timeout=30)
    assert st["state"] == "SUCCEEDED", st
    g, job_b = st["jobs"]["g"], st["jobs"]["b"]
    assert g["state"] == "COMPLETED" and g["attempts"] == 0 and g["attempts_log"] == []
    rec = g["gate"]
    assert rec["decision"] == "approved" and rec["decided_by"] == "alice" and rec["comment"] == "looks good"
    assert before <= rec["decided_at"] <= time.time() and rec["waiting_since"] == gate["waiting_since"]
    assert job_b["state"] == "COMPLETED" and job_b["started_at"] >= rec["decided_at"]
    shown = titan("gates", "--run", run.run_id, broker=b).stdout
    assert "approved by alice" in shown and "comment: looks good" in shown


# ---- 2. reject and timeout --------------------------------------------------------------------------------


def test_reject_ends_the_gate_skips_downstream_and_fails_the_run(cluster, tmp_path: Path) -> None:
    b = cluster.broker_addr
    with cluster.client() as c:
        run = c.submit_yaml(gated_pipeline(tmp_path, "rej"))
        pending_gate(c, run.run_id)
        out = titan("reject", run.run_id, "g", "--reason", "not today", "--as", "bob", broker=b)
        assert out.returncode == 0, out.stderr
        st = run.wait(timeout=30)
        logs = c.log_records(run.run_id, "g")
    assert st["state"] == "FAILED"
    g = st["jobs"]["g"]
    assert g["state"] == "REJECTED" and st["jobs"]["b"]["state"] == "SKIPPED"
    assert g["attempts"] == 0 and g["attempts_log"] == [] and g["worker"] is None and logs == []  # no process
    assert g["gate"]["decided_by"] == "bob" and g["gate"]["comment"] == "not today"


def test_a_gate_times_out_once_with_the_same_consequences(cluster, tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, {"name": "late", "jobs": [
        {"id": "a", "command": ["true"], "hitl_message": "quick?", "max_wait_seconds": 3},
        {"id": "b", "command": ["true"], "depends_on": ["a"]},
    ]})
    with cluster.client() as c:
        run = c.submit_yaml(path)
        assert run.job_ids == ["a", "hitl-gate-a", "b"]
        gate = pending_gate(c, run.run_id, "hitl-gate-a")
        st = run.wait(timeout=20)
        time.sleep(1.0)
        again = c.status(run.run_id)["jobs"]["hitl-gate-a"]
    g = st["jobs"]["hitl-gate-a"]
    assert st["state"] == "FAILED" and g["state"] == "TIMED_OUT" and st["jobs"]["b"]["state"] == "SKIPPED"
    assert st["jobs"]["b"]["depends_on"] == ["hitl-gate-a"]
    waited = g["gate"]["decided_at"] - gate["waiting_since"]
    assert 2.9 <= waited < 5.0, waited  # one period of 3 s, no second one
    assert g["attempts"] == 0 and again["state"] == "TIMED_OUT" and again["gate"]["decided_at"] == g["gate"]["decided_at"]


# ---- 3. broker kill -9 ---------------------------------------------------------------------------------


def _gates_or_none(c: Any, run_id: str) -> list[dict[str, Any]] | None:
    try:
        return c.gates(run_id)
    except TitanError:
        return None


def test_gates_survive_a_broker_kill(make_cluster, tmp_path: Path) -> None:
    cluster = make_cluster(workers=1)
    with cluster.client(timeout=5) as c:
        waiting = c.submit_yaml(gated_pipeline(tmp_path, "keep"))
        deadline = pending_gate(c, waiting.run_id)["deadline"]
        decided = c.submit_yaml(gated_pipeline(tmp_path, "decided"))
        pending_gate(c, decided.run_id)
        acked = c.approve(decided.run_id, "g", comment="just before the crash", by="carol")
        assert acked["decision"] == "approved"
        cluster.procs["broker"].kill()  # right after the acknowledgement
    time.sleep(0.5)
    cluster.start_broker()
    with cluster.client(timeout=5) as c:
        gates = wait_until(lambda: _gates_or_none(c, waiting.run_id), timeout=20, what="the restarted broker")
        assert gates[0]["state"] == "AWAITING_APPROVAL" and gates[0]["deadline"] == deadline
        survived = c.gates(decided.run_id)[0]
        assert (survived["decision"], survived["decided_by"], survived["comment"]) == (
            "approved", "carol", "just before the crash")
        assert c.wait(decided.run_id, timeout=30)["state"] == "SUCCEEDED"
        c.approve(waiting.run_id, "g", by="dave")
        assert c.wait(waiting.run_id, timeout=30)["state"] == "SUCCEEDED"


# ---- 4. two decisions at once ------------------------------------------------------------------------------


def test_of_two_concurrent_decisions_exactly_one_wins(cluster, tmp_path: Path) -> None:
    b = cluster.broker_addr
    env = dict(os.environ, TITAN_BROKER=b)
    with cluster.client() as c:
        run = c.submit_yaml(gated_pipeline(tmp_path, "race"))
        pending_gate(c, run.run_id)
        procs = [subprocess.Popen([*TITAN, verb, run.run_id, "g", "--as", who], env=env, cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for verb, who in (("approve", "ann"), ("reject", "ben"))]
        outs = [(p.wait(60), *p.communicate()) for p in procs]
        st = run.wait(timeout=30)
        with pytest.raises(GateNotPending, match="already decided"):
            c.approve(run.run_id, "g")
    codes = sorted(code for code, _, _ in outs)
    assert codes == [0, 2], outs
    loser = next(err for code, _, err in outs if code == 2)
    assert "already decided" in loser and "Traceback" not in loser
    winner = "ann" if outs[0][0] == 0 else "ben"
    assert st["jobs"]["g"]["gate"]["decided_by"] == winner
    assert st["state"] == ("SUCCEEDED" if winner == "ann" else "FAILED")


# ---- 6. notifications ----------------------------------------------------------------------------------------


class Receiver:
    """A local HTTP server that records the JSON events POSTed to it."""

    def __init__(self, port: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        received = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def of(self, run_id: str) -> list[str]:
        return [e["event"] for e in self.events if e.get("run_id") == run_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_notifications_arrive_in_order(make_cluster, tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        cluster = make_cluster(workers=1, broker_args=["--notify-url", f"http://127.0.0.1:{receiver.port}/hook"])
        with cluster.client() as c:
            run = c.submit_yaml(gated_pipeline(tmp_path, "hooked"))
            pending_gate(c, run.run_id)
            wait_until(lambda: receiver.of(run.run_id) == ["gate_pending"], timeout=10, what="gate_pending")
            c.approve(run.run_id, "g", comment="go", by="erin")
            run.wait(timeout=30)
        wait_until(lambda: len(receiver.of(run.run_id)) == 3, timeout=10, what="three events")
    finally:
        receiver.close()
    assert receiver.of(run.run_id) == ["gate_pending", "gate_decided", "run_finished"]
    pending, decided, finished = [e for e in receiver.events if e.get("run_id") == run.run_id]
    assert pending["gate_id"] == "g" and pending["message"] == "ship it?" and pending["deadline"] > time.time()
    assert decided["decision"] == "approved" and decided["decided_by"] == "erin" and decided["comment"] == "go"
    assert finished["state"] == "SUCCEEDED" and len({pending["id"], decided["id"], finished["id"]}) == 3


def test_a_receiver_that_is_down_slows_nothing_and_gets_the_events_when_back(make_cluster, tmp_path: Path) -> None:
    # "down" at its worst: a port that takes connections but never answers (each POST hangs until its timeout)
    hole = socket.socket()
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    port = hole.getsockname()[1]
    receiver = None
    try:
        cluster = make_cluster(workers=1, broker_args=["--notify-url", f"http://127.0.0.1:{port}/hook"])
        with cluster.client() as c:
            gated = c.submit_yaml(gated_pipeline(tmp_path, "down"))
            pending_gate(c, gated.run_id)
            t0 = time.monotonic()
            runs = [c.submit_job(TitanJob(f"quick{i}", command=["true"])) for i in range(10)]
            for r in runs:
                assert r.wait(timeout=30)["state"] == "SUCCEEDED"
            t_approve = time.monotonic()
            c.approve(gated.run_id, "g")
            approve_took = time.monotonic() - t_approve
            gated.wait(timeout=30)
            took = time.monotonic() - t0
            # 12 notices, each POST hanging 5 s: a blocking sender would take a minute
            assert took < 8.0 and approve_took < 1.0, (took, approve_took)
            hole.close()  # the receiver comes back on the same port
            receiver = Receiver(port)
            wait_until(lambda: len(receiver.of(gated.run_id)) == 3, timeout=40, what="the held events")
            wait_until(lambda: all(receiver.of(r.run_id) == ["run_finished"] for r in runs), timeout=20,
                       what="every run_finished")
            assert c.stats()["notify_dropped"] == 0
    finally:
        hole.close()
        if receiver is not None:
            receiver.close()
    assert receiver.of(gated.run_id) == ["gate_pending", "gate_decided", "run_finished"]
    order = [e["run_id"] for e in receiver.events if e["event"] == "run_finished"]
    assert order.index(runs[0].run_id) < order.index(runs[-1].run_id) < order.index(gated.run_id)


# ---- 7. agent runs ---------------------------------------------------------------------------------------------

SUBMIT_FROM_JOB = """
import os
from client import TitanClient, TitanJob
with TitanClient() as c:
    run = c.submit_dag("stage-3", [TitanJob("inner", command=["true"])])  # no agent id given: inherited
print("agent", os.environ["TITAN_AGENT_RUN_ID"], "submitted", run.run_id)
"""


def test_three_submissions_one_from_inside_a_job_make_one_agent_run(cluster, tmp_path: Path) -> None:
    b = cluster.broker_addr
    agent = f"agent-{time.time_ns()}"
    with cluster.client() as c:
        first = c.submit_dag("stage-1", [TitanJob("plan", command=["true"])], agent_run_id=agent)
        first.wait(timeout=30)
        path = write_pipeline(tmp_path, {"name": "stage-2", "jobs": [{"id": "spawn", "file": "spawn.py"}]},
                              {"spawn.py": SUBMIT_FROM_JOB})
        out = titan("run", str(path), "--agent-run-id", agent, "--wait", broker=b)
        assert out.returncode == 0, out.stdout + out.stderr
        second = out.stdout.splitlines()[0].strip()
        logs = c.logs(second, "spawn")
        assert logs and logs[-1].startswith(f"agent {agent} submitted ")
        third = logs[-1].split()[-1]
        c.wait(third, timeout=30)
        doc = c.agent_run(agent)
        c.submit_dag("elsewhere", [TitanJob("x", command=["true"])], agent_run_id=f"other-{agent}").wait(timeout=30)
        listed = c.agent_runs()
    cli = json.loads(titan("agent-run", agent, "--json", broker=b).stdout)
    assert [s["run_id"] for s in doc["stages"]] == [first.run_id, second, third]
    assert [s["name"] for s in cli["stages"]] == ["stage-1", "stage-2", "stage-3"]
    assert cli["state"] == doc["state"] == "SUCCEEDED" and cli["gates_pending"] == 0
    assert all(s["duration"] >= 0 for s in cli["stages"])
    mine = next(a for a in listed if a["agent_run_id"] == agent)
    assert mine["stages"] == 3 and mine["state"] == "SUCCEEDED" and mine["first_activity"] <= mine["last_activity"]
    assert listed[0]["agent_run_id"] == f"other-{agent}"  # the most recently active first
    table = titan("agent-runs", broker=b).stdout
    assert agent in table and "3 stages" in table
