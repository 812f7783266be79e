"""Retries, dead letters, skipped downstream jobs, cancel and timeouts on real processes."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers import job_state, process_gone, wait_until, write_pipeline

FAIL_PY = """
import os, sys
print(f"attempt {os.environ['TITAN_ATTEMPT']} starting")
print(f"attempt {os.environ['TITAN_ATTEMPT']} failing", file=sys.stderr)
sys.exit(7)
"""

# A job whose process starts two grandchildren, then sleeps; it writes every pid it owns.
SLEEPER_SH = """
sleep 300 &
sleep 301 &
echo "$$ $(jobs -p | tr '\\n' ' ')" > "$TITAN_SHARED_DIR/pids-$TITAN_JOB_ID"
echo started
wait
"""


def test_failing_job_gets_four_attempts_then_dead_downstream_skipped(client, tmp_path: Path):
    path = write_pipeline(tmp_path, {"name": "fails", "jobs": [
        {"id": "bad", "file": "fail.py"},
        {"id": "after", "file": "fail.py", "depends_on": ["bad"]},
        {"id": "later", "file": "fail.py", "depends_on": ["after"]},
        {"id": "independent", "command": ["true"]},
    ]}, {"fail.py": FAIL_PY})
    run = client.submit_yaml(path)
    st = run.wait(timeout=90)
    assert st["state"] == "FAILED"
    jobs = st["jobs"]
    assert jobs["bad"]["state"] == "DEAD" and jobs["bad"]["attempts"] == 4 and jobs["bad"]["exit_code"] == 7
    assert jobs["after"]["state"] == "SKIPPED" and jobs["after"]["attempts"] == 0
    assert jobs["later"]["state"] == "SKIPPED"
    assert jobs["independent"]["state"] == "COMPLETED"
    lines = client.logs(run.run_id, "bad")
    for n in (1, 2, 3, 4):
        assert f"attempt {n} starting" in lines and f"attempt {n} failing" in lines
    records = client.log_records(run.run_id, "bad")
    assert [r[1] for r in records] == sorted(r[1] for r in records)  # attempts in order
    assert {r[2] for r in records} == {"stdout", "stderr"}


def test_cancel_kills_the_process_group_and_cascades(cluster, client, tmp_path: Path):
    path = write_pipeline(tmp_path, {"name": "cancel", "jobs": [
        {"id": "sleeper", "file": "sleeper.sh"},
        {"id": "child", "command": ["true"], "depends_on": ["sleeper"]},
        {"id": "grandchild", "command": ["true"], "depends_on": ["child"]},
    ]}, {"sleeper.sh": SLEEPER_SH})
    run = client.submit_yaml(path)
    pid_file = cluster.data_dir / "work" / "runs" / run.run_id / "shared" / "pids-sleeper"
    wait_until(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 3, what="the sleeper's pids")
    pids = [int(p) for p in pid_file.read_text().split()]
    assert not any(process_gone(p) for p in pids)
    t0 = time.monotonic()
    out = client.cancel(run.run_id, "sleeper")
    assert set(out["cancelled"]) == {"sleeper", "child", "grandchild"}

    wait_until(lambda: all(process_gone(p) for p in pids), timeout=5, what="every process of the cancelled job to die")
    assert time.monotonic() - t0 < 5
    st = run.wait(timeout=30)
    assert st["state"] == "CANCELLED"
    assert {j: v["state"] for j, v in st["jobs"].items()} == {
        "sleeper": "CANCELLED", "child": "CANCELLED", "grandchild": "CANCELLED"}
    # the slot came back and a resubmission runs normally
    again = client.submit_yaml(write_pipeline(tmp_path / "again", {"name": "again", "jobs": [
        {"id": "ok", "command": ["echo", "fine"]}]}))
    assert again.wait(timeout=30)["state"] == "SUCCEEDED"
    assert client.logs(again.run_id, "ok") == ["fine"]


def test_cancelling_a_delayed_job_means_it_never_runs(cluster, client, tmp_path: Path):
    path = write_pipeline(tmp_path, {"name": "delayed", "jobs": [
        {"id": "later", "command": ["touch", "ran"], "delay": 3},
    ]})
    run = client.submit_yaml(path)
    assert job_state(client, run.run_id, "later") == "DELAYED"
    client.cancel(run.run_id)
    time.sleep(4)
    st = client.status(run.run_id)
    assert st["state"] == "CANCELLED" and st["jobs"]["later"]["attempts"] == 0


def test_delay_counts_from_dependency_release(client, tmp_path: Path):
    path = write_pipeline(tmp_path, {"name": "delay", "jobs": [
        {"id": "first", "command": ["sleep", "1"]},
        {"id": "second", "command": ["true"], "delay": 1.5, "depends_on": ["first"]},
    ]})
    st = client.submit_yaml(path).wait(timeout=30)
    assert st["state"] == "SUCCEEDED"
    gap = st["jobs"]["second"]["started_at"] - st["jobs"]["first"]["finished_at"]
    assert 1.5 <= gap < 4.0, gap


def test_timeout_kills_the_job_and_counts_as_a_failure(client, tmp_path: Path):
    path = write_pipeline(tmp_path, {"name": "timeout", "jobs": [
        {"id": "slow", "command": ["sleep", "60"], "timeout": 1, "retries": 0},
    ]})
    st = client.submit_yaml(path).wait(timeout=30)
    assert st["state"] == "FAILED"
    job = st["jobs"]["slow"]
    assert job["state"] == "DEAD" and "timeout" in (job["error"] or "")
    assert job["finished_at"] - job["started_at"] < 10
