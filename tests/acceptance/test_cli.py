"""The `titan` CLI driven as a user would, against real clusters."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import BAD_PIPELINES, PIPELINES, REPO, process_gone, wait_until, write_pipeline
from titan_zmq import defaults

TITAN = [sys.executable, "-m", "client.cli"]


def titan(*args: str, broker: str | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if broker:
        env["TITAN_BROKER"] = broker
    return subprocess.run([*TITAN, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO, **kw)


def test_run_wait_json_prints_the_status_document_and_exit_code(cluster):
    out = titan("run", str(PIPELINES / "diamond" / "diamond.yaml"), "--wait", "--json", broker=cluster.broker_addr)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["state"] == "SUCCEEDED" and set(doc["jobs"]) == {"start", "left", "right", "join"}
    for job in doc["jobs"].values():
        assert {"state", "attempts", "worker", "exit_code", "started_at", "finished_at"} <= set(job)
        assert isinstance(job["started_at"], float) and job["finished_at"] >= job["started_at"]
    again = titan("status", doc["run_id"], "--json", broker=cluster.broker_addr)
    assert json.loads(again.stdout)["jobs"] == doc["jobs"]
    logs = titan("logs", doc["run_id"], "join", broker=cluster.broker_addr)
    assert "join: done" in logs.stdout


def test_run_wait_exits_non_zero_when_the_run_fails(cluster, tmp_path: Path):
    path = write_pipeline(tmp_path, {"name": "nope", "jobs": [{"id": "x", "command": ["false"], "retries": 0}]})
    out = titan("run", str(path), "--wait", broker=cluster.broker_addr)
    assert out.returncode == 1
    assert "FAILED" in out.stdout and "DEAD" in out.stdout


def test_run_follow_prints_live_lines_of_every_job(cluster):
    out = titan("run", str(PIPELINES / "etl" / "etl.yaml"), "--follow", broker=cluster.broker_addr)
    assert out.returncode == 0, out.stderr
    assert "[extract#1] extracted 4 records" in out.stdout
    assert "[load#1] loaded 4 rows; warmest: Pune at 88.2 F" in out.stdout
    assert out.stdout.index("[extract#1]") < out.stdout.index("[transform#1]") < out.stdout.index("[load#1]")


def test_workers_store_stats_cancel_and_upload(cluster, tmp_path: Path):
    b = cluster.broker_addr
    workers = json.loads(titan("workers", "--json", broker=b).stdout)
    assert len(workers) == 2
    assert {"id", "host", "pid", "capabilities", "slots", "running"} <= set(workers[0])
    assert titan("store", "set", "greeting", "hi | there, all", broker=b).returncode == 0
    assert titan("store", "get", "greeting", broker=b).stdout == "hi | there, all\n"
    assert titan("store", "sadd", "team", "ann", broker=b).stdout == "1\n"
    assert titan("store", "sadd", "team", "ann", broker=b).stdout == "0\n"
    assert titan("store", "smembers", "team", broker=b).stdout == "ann\n"
    assert titan("store", "del", "greeting", broker=b).stdout == "1\n"
    missing = titan("store", "get", "greeting", broker=b)
    assert missing.returncode == 1 and "no key" in missing.stderr
    stats = json.loads(titan("stats", broker=b).stdout)
    assert stats["workers"] == 2 and "queued" in stats
    f = tmp_path / "data.bin"
    f.write_bytes(b"\x00\x01payload")
    assert titan("upload", str(f), broker=b).stdout.strip() == "data.bin"
    path = write_pipeline(tmp_path, {"name": "long", "jobs": [{"id": "s", "command": ["sleep", "60"]}]})
    run_id = titan("run", str(path), broker=b).stdout.strip()
    out = titan("cancel", run_id, broker=b)
    assert out.returncode == 0 and "run CANCELLED" in out.stdout


def test_errors_are_clear_messages_not_tracebacks(cluster, tmp_path: Path):
    bad = write_pipeline(tmp_path, {"name": "bad", "jobs": [{"id": "a", "command": ["true"], "delay": "soon"}]})
    out = titan("run", str(bad), broker=cluster.broker_addr)
    assert out.returncode == 2 and "jobs[0].delay: expected non-negative number" in out.stderr
    assert "Traceback" not in out.stderr
    out = titan("status", "nope", broker=cluster.broker_addr)
    assert out.returncode == 2 and "unknown run id 'nope'" in out.stderr
    env = dict(os.environ, TITAN_TIMEOUT="1")
    dead = subprocess.run([*TITAN, "status", "--broker", "tcp://127.0.0.1:1"], capture_output=True, text=True,
                          timeout=30, env=env)
    assert dead.returncode == 2 and "no answer from the broker" in dead.stderr


TOO_MANY_JOBS = ("name: x\njobs:\n" + "".join(f"  - {{id: j{i}, command: [echo]}}\n"
                                              for i in range(defaults.MAX_JOBS_PER_SUBMISSION + 1))).encode()


@pytest.mark.parametrize("case", [*sorted(BAD_PIPELINES), "too-many-jobs"])
def test_bad_pipelines_are_clear_errors_with_exit_2(tmp_path: Path, case: str):
    content, needle = BAD_PIPELINES.get(case) or (TOO_MANY_JOBS, "jobs: 20001 jobs, over the cap of 20000")
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    out = titan("run", str(path), broker="tcp://127.0.0.1:1")  # nothing listens: it must fail before sending
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: ") and needle in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr) < 1000, out.stderr


def test_titan_up_starts_everything_and_stops_cleanly_on_sigterm(tmp_path: Path):
    proc = subprocess.Popen([*TITAN, "up", "--workers", "2", "--data-dir", str(tmp_path), "--base-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        seen = ""
        for line in proc.stdout:  # the addresses are printed once the cluster is up on the ports it got
            seen += line
            if line.startswith("broker  "):
                break
        assert seen.endswith("\n") and seen.splitlines()[-1].startswith("broker  "), seen
        broker = seen.splitlines()[-1].split()[1]
        wait_until(lambda: titan("workers", "--json", broker=broker, timeout=30).returncode == 0
                   and len(json.loads(titan("workers", "--json", broker=broker).stdout)) == 2,
                   timeout=30, interval=0.3, what="titan up to be ready")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4  # store, broker, 2 workers
        out = titan("run", str(PIPELINES / "diamond" / "diamond.yaml"), "--wait", broker=broker)
        assert out.returncode == 0, out.stdout + out.stderr
        proc.send_signal(signal.SIGTERM)
        text = seen + proc.stdout.read()
        assert proc.wait(timeout=30) == 0
        assert f"broker  {broker}" in text and "cluster stopped" in text
        time.sleep(0.2)
        assert all(process_gone(c.pid) for c in children)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def port_free(addr: str) -> bool:
    """Whether nothing listens on ``tcp://host:port`` (SO_REUSEADDR, as every server sets, so that
    connections left in TIME_WAIT do not count)."""
    host, port = addr.removeprefix("tcp://").rsplit(":", 1)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
            s.listen()
        except OSError:
            return False
    return True


@pytest.mark.timeout(180)
def test_titan_up_killed_with_sigkill_takes_store_broker_and_workers_along(tmp_path: Path):
    proc = subprocess.Popen([*TITAN, "up", "--workers", "2", "--data-dir", str(tmp_path), "--base-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            start_new_session=True)
    children: list[psutil.Process] = []
    try:
        assert proc.stdout is not None
        addrs: dict[str, str] = {}
        for line in proc.stdout:  # broker, pub and store addresses, printed once the cluster is up
            name, _, addr = line.partition(" ")
            if name in ("broker", "pub", "store"):
                addrs[name] = addr.strip()
            if len(addrs) == 3:
                break
        assert len(addrs) == 3, addrs
        wait_until(lambda: titan("workers", "--json", broker=addrs["broker"], timeout=30).returncode == 0
                   and len(json.loads(titan("workers", "--json", broker=addrs["broker"]).stdout)) == 2,
                   timeout=60, interval=0.3, what="titan up to be ready")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4  # store, broker, 2 workers
        proc.kill()  # kill -9: no handler runs, nothing is stopped by titan up itself
        proc.wait(timeout=10)
        wait_until(lambda: all(process_gone(c.pid) for c in children), timeout=60, interval=0.2,
                   what=f"the children of titan up to die with it: {[c.pid for c in children]}")
        wait_until(lambda: all(port_free(a) for a in addrs.values()), timeout=30, interval=0.2,
                   what=f"the ports to be free again: {addrs}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in children:  # a failed run must not leave them behind
            if not process_gone(child.pid):
                child.kill()


@pytest.mark.slow
def test_demo_runs_a_pipeline_to_succeeded_and_shows_logs(tmp_path: Path):
    out = subprocess.run([*TITAN, "demo", str(PIPELINES / "etl" / "etl.yaml"), "--data-dir", str(tmp_path), "--no-keep"],
                         capture_output=True, text=True, timeout=180, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "--- live logs ---" in out.stdout and "[load#1] loaded 4 rows" in out.stdout
    assert "SUCCEEDED" in out.stdout


def test_specs_and_resubmit_run_the_same_jobs_again_as_a_new_run(cluster, tmp_path: Path):
    b = cluster.broker_addr
    out = titan("run", str(PIPELINES / "diamond" / "diamond.yaml"), "--wait", broker=b)
    assert out.returncode == 0, out.stderr
    first = out.stdout.split()[0]
    specs = json.loads(titan("specs", first, broker=b).stdout)
    assert [s["id"] for s in specs] == ["start", "left", "right", "join"]
    assert specs[3]["depends_on"] == ["left", "right"]
    again = titan("resubmit", first, "--wait", broker=b)
    assert again.returncode == 0, again.stderr
    second = again.stdout.split()[0]
    assert second != first and "SUCCEEDED" in again.stdout
    assert json.loads(titan("specs", second, broker=b).stdout) == specs
    assert "join: done" in titan("logs", second, "join", broker=b).stdout
    missing = titan("resubmit", "no-such-run", broker=b)
    assert missing.returncode == 2 and "unknown run id" in missing.stderr
