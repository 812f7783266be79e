"""Issue 8, the worker's side: a loop that never blocks on user data, archives with limits, workspaces
that are cleaned, honest logs (only the holder of an attempt writes them, capped), no daemon outliving
its job.  Real processes throughout."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.helpers import process_gone, wait_until, write_pipeline
from titan_zmq.protocol import Op, decode, encode

BIG = 300 << 20  # a project file of 300 MiB of zeros: a few hundred KiB packed


def project_with_big_file(folder: Path, name: str, size: int, retries: int = 0) -> Path:
    path = write_pipeline(folder, {"name": name, "project": True, "jobs": [
        {"id": "main", "file": "main.py", "retries": retries}]},
        {"main.py": "import os\nprint('size', os.path.getsize(os.environ['TITAN_PROJECT_DIR'] + '/big.bin'))\n"})
    with open(folder / "big.bin", "wb") as f:
        f.truncate(size)  # sparse on disk here; the worker writes every byte
    return path


@pytest.mark.timeout(240)
def test_a_big_project_is_prepared_while_heartbeats_flow_and_other_jobs_are_not_rerun(
        make_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a tight liveness (lost after 3 x 0.25 s of silence) so that any stall of the worker's loop shows
    monkeypatch.setenv("TITAN_HEARTBEAT_INTERVAL", "0.25")
    monkeypatch.setenv("TITAN_MAX_UNPACK_RATIO", "0")  # this project is allowed: only its size matters here
    cluster = make_cluster(workers=1, slots=2)
    marks = tmp_path / "marks"
    marks.mkdir()
    pipe = write_pipeline(tmp_path / "long", {"name": "long", "jobs": [
        {"id": "other", "command": ["sh", "-c", f"echo x >> {marks}/other; echo started; sleep 12"], "retries": 3}]})
    with cluster.client() as c:
        other = c.submit_yaml(pipe)
        wait_until(lambda: (marks / "other").exists(), 30, what="the other user's job to start")
        big = c.submit_yaml(project_with_big_file(tmp_path / "big", "big", BIG), timeout=60)
        st = big.wait(timeout=120)
        assert st["state"] == "SUCCEEDED", st
        assert st["jobs"]["main"]["attempts"] == 1, st
        assert c.logs(big.run_id, "main") == [f"size {BIG}"]
        assert other.wait(timeout=60)["state"] == "SUCCEEDED"
        assert (marks / "other").read_text() == "x\n", "the other job was run again: its worker was declared lost"
        assert c.status(other.run_id)["jobs"]["other"]["attempts"] == 1
    broker_log = cluster.procs["broker"].output()
    assert "lost" not in broker_log, broker_log[-2000:]
    assert "silent" not in cluster.procs["worker1"].output()


@pytest.mark.timeout(180)
def test_a_zip_bomb_is_refused_at_once_without_burning_retries(make_cluster: Any, tmp_path: Path) -> None:
    cluster = make_cluster(workers=1, slots=2)
    with cluster.client() as c:
        run = c.submit_yaml(project_with_big_file(tmp_path / "bomb", "bomb", 200 << 20, retries=3), timeout=60)
        st = run.wait(timeout=60)
        job = st["jobs"]["main"]
        assert (st["state"], job["state"], job["attempts"]) == ("FAILED", "DEAD", 1), st
        assert "unpacks to more than" in (job["error"] or "")
        logs = c.logs(run.run_id, "main")
        assert len(logs) == 1 and logs[0].startswith("[titan] cannot start job: project archive unpacks to more than")
    assert not list((cluster.data_dir / "work" / "runs").glob("*/project*"))


@pytest.mark.timeout(120)
def test_workspaces_go_when_attempts_and_runs_end_and_failed_ones_are_kept(make_cluster: Any, tmp_path: Path) -> None:
    cluster = make_cluster(workers=2, slots=2)
    work = cluster.data_dir / "work"
    pipe = write_pipeline(tmp_path / "ws", {"name": "ws", "jobs": [
        {"id": "produce", "command": ["sh", "-c", "head -c 100000 /dev/zero > out.bin; echo data > $TITAN_SHARED_DIR/x"]},
        {"id": "consume", "command": ["sh", "-c", "cat $TITAN_SHARED_DIR/x"], "depends_on": ["produce"],
         "affinity": True},
        {"id": "broken", "command": ["sh", "-c", "echo why > debug.txt; exit 3"], "retries": 0},
    ]})
    with cluster.client() as c:
        run = c.submit_yaml(pipe)
        st = run.wait(timeout=60)
        assert st["jobs"]["consume"]["state"] == "COMPLETED" and st["jobs"]["broken"]["state"] == "DEAD", st
        assert c.logs(run.run_id, "consume") == ["data"]
    wait_until(lambda: not (work / "runs" / run.run_id).exists(), 20, what="the run's directory to be removed")
    kept = work / "failed" / run.run_id / "broken@1" / "debug.txt"
    assert kept.read_text() == "why\n"
    assert not list((work / "failed" / run.run_id).glob("produce*"))


def test_a_finished_attempt_leaves_nothing_and_its_emptied_directory_serves_the_runs_next_attempt(
        make_cluster: Any, tmp_path: Path) -> None:
    cluster = make_cluster(workers=1, slots=2)
    attempts = cluster.data_dir / "work" / "runs"
    release = tmp_path / "release"
    pipe = write_pipeline(tmp_path / "reuse", {"name": "reuse", "jobs": [
        {"id": "hold", "command": ["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.05; done"]},
        {"id": "a", "command": ["sh", "-c", "stat -c %i .; echo result > out.txt; head -c 5000 /dev/zero > d.bin"]},
        {"id": "c", "command": ["sh", "-c", "stat -c %i .; ls -A; echo listed"], "depends_on": ["a"]},
    ]})
    with cluster.client() as c:
        run = c.submit_yaml(pipe)
        wait_until(lambda: c.status(run.run_id)["jobs"]["c"]["state"] == "COMPLETED", 30, what="job c to complete")
        a_inode, c_out = c.logs(run.run_id, "a"), c.logs(run.run_id, "c")
        assert c_out == [a_inode[0], "listed"], (a_inode, c_out)  # a's directory, renamed into place, empty
        left = {p.name: sorted(x.name for x in p.iterdir()) for p in (attempts / run.run_id / "attempts").iterdir()}
        assert "a@1" not in left and "c@1" not in left and left.pop("hold@1") == [], left
        assert left and all(name.startswith("@spare-") and not content for name, content in left.items()), left
        release.touch()
        assert run.wait(timeout=30)["state"] == "SUCCEEDED"
    wait_until(lambda: not (attempts / run.run_id).exists(), 20, what="the run's directory to be removed")


def test_the_directory_of_a_job_that_left_processes_behind_serves_no_other_attempt(
        make_cluster: Any, tmp_path: Path) -> None:
    """A process a job left behind is killed when the job ends, but it may have written meanwhile, and
    its working directory is that attempt's: such a directory is removed, never kept as a spare."""
    cluster = make_cluster(workers=1, slots=2)
    attempts = cluster.data_dir / "work" / "runs"
    release = tmp_path / "release"
    pipe = write_pipeline(tmp_path / "left", {"name": "left", "jobs": [
        {"id": "hold", "command": ["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.05; done"]},
        {"id": "grouped", "command": ["sh", "-c", "sleep 30 & echo started"]},  # stays in the job's group
        {"id": "escaped", "command": ["sh", "-c", "(setsid sleep 30 &); echo started"],  # leaves it
         "depends_on": ["grouped"]},
    ]})
    with cluster.client() as c:
        run = c.submit_yaml(pipe)
        wait_until(lambda: c.status(run.run_id)["jobs"]["escaped"]["state"] == "COMPLETED", 30,
                   what="job escaped to complete")
        # both ended with an empty directory, and a job that leaves nothing behind would have left a spare
        assert sorted(p.name for p in (attempts / run.run_id / "attempts").iterdir()) == ["hold@1"]
        release.touch()
        assert run.wait(timeout=30)["state"] == "SUCCEEDED"


# ---- honest logs ------------------------------------------------------------------------------------


class Intruder:
    """A second DEALER on the broker's ROUTER, registered as a worker that can run nothing."""

    def __init__(self, addr: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(addr)

    def send(self, op: Op, body: dict[str, Any]) -> None:
        self.sock.send(encode(op, body))

    def ping(self) -> None:
        """A round trip: everything sent before it has been handled by the broker when it returns."""
        self.send(Op.STATS, {"rid": "ping"})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.sock.poll(500):
            if decode(self.sock.recv()).rid == "ping":
                return
        raise AssertionError("no answer to a ping")

    def register(self) -> None:
        self.send(Op.REGISTER, {"name": "intruder", "host": "x", "pid": 1, "caps": ["NOTHING"], "slots": 1})
        assert self.sock.poll(10_000), "no answer to REGISTER"
        assert decode(self.sock.recv()).op == Op.ACK

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def intruder(make_cluster: Any) -> Iterator[tuple[Any, Intruder]]:
    cluster = make_cluster(workers=1, slots=2)
    who = Intruder(cluster.broker_addr)
    try:
        yield cluster, who
    finally:
        who.close()


@pytest.mark.timeout(120)
def test_forged_log_batches_from_another_connection_are_refused(intruder: tuple[Any, Intruder], tmp_path: Path) -> None:
    cluster, who = intruder
    gate = tmp_path / "go"
    pipe = write_pipeline(tmp_path / "p", {"name": "honest", "jobs": [
        {"id": "talk", "command": ["sh", "-c", f"echo one; while [ ! -e {gate} ]; do sleep 0.05; done; echo two"]},
        {"id": "done", "command": ["echo", "finished"]},
    ]})
    with cluster.client() as c:
        run = c.submit_yaml(pipe)
        wait_until(lambda: c.logs(run.run_id, "talk") == ["one"], 30, what="the job's first line")
        wait_until(lambda: c.status(run.run_id)["jobs"]["done"]["state"] == "COMPLETED", 30, what="'done' to end")
        forged = {"run_id": run.run_id, "attempt": 1, "lines": [["stdout", "forged"]]}
        who.send(Op.LOG_BATCH, {**forged, "job_id": "talk", "seq": 10**9})  # unregistered connection
        who.register()
        who.send(Op.LOG_BATCH, {**forged, "job_id": "talk", "seq": 1})  # registered, but not the holder
        who.send(Op.LOG_BATCH, {**forged, "job_id": "done", "seq": 5})  # a finished job
        who.ping()
        gate.touch()
        assert run.wait(timeout=30)["state"] == "SUCCEEDED"
        assert c.logs(run.run_id, "talk") == ["one", "two"]
        assert c.logs(run.run_id, "done") == ["finished"]
        assert c.stats()["log_batches_refused"] == 3
    assert "refused" in cluster.procs["broker"].output()


@pytest.mark.timeout(120)
def test_a_job_log_stops_at_max_log_bytes_with_a_marker_and_a_flag(make_cluster: Any) -> None:
    cluster = make_cluster(workers=1, broker_args=["--retry-backoff", "0.2", "--max-log-bytes", "50000"])
    with cluster.client() as c:
        run = c.submit_dag("chatty", [_job("loud", ["sh", "-c", "seq 1 20000"]), _job("quiet", ["echo", "hi"])])
        st = run.wait(timeout=60)
        assert st["state"] == "SUCCEEDED"
        assert st["jobs"]["loud"]["log_truncated"] is True and st["jobs"]["quiet"]["log_truncated"] is False
        lines = c.logs(run.run_id, "loud")
        assert lines[0] == "1" and lines[-1].startswith("[titan] log truncated") and len(lines) < 10_000
        assert sum(line.startswith("[titan]") for line in lines) == 1
        assert c.logs(run.run_id, "quiet") == ["hi"]
        assert c.stats()["log_lines_truncated"] > 0


def _job(job_id: str, command: list[str], **kw: Any) -> Any:
    from client.job import TitanJob

    return TitanJob(job_id=job_id, command=command, **kw)


# ---- clean process trees ------------------------------------------------------------------------------

DAEMONIZE = textwrap.dedent("""
    import os, sys, time
    def daemon(pidfile, clean_env):
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                if clean_env:
                    os.execve(sys.executable, [sys.executable, "-c", f"import os, time; open({pidfile!r}, 'w').write(str(os.getpid())); time.sleep(1000)"], {})
                open(pidfile, "w").write(str(os.getpid()))
                time.sleep(1000)
            os._exit(0)
    daemon(sys.argv[1] + ".a", False)
    daemon(sys.argv[1] + ".b", True)  # one that starts with an empty environment
    print("daemons started", flush=True)
    time.sleep(float(sys.argv[2]))
""")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["completed", "cancelled", "timeout"])
def test_no_daemon_outlives_its_job(make_cluster: Any, tmp_path: Path, how: str) -> None:
    cluster = make_cluster(workers=1, slots=2)
    pidfile = tmp_path / "daemon"
    script = tmp_path / "daemonize.py"
    script.write_text(DAEMONIZE)
    leader_sleep = "0.5" if how == "completed" else "1000"
    extra = {"timeout": 3, "retries": 0} if how == "timeout" else {}
    pids: list[int] = []
    try:
        with cluster.client() as c:
            run = c.submit_dag(how, [_job("d", [sys.executable, str(script), str(pidfile), leader_sleep], **extra)])
            for suffix in (".a", ".b"):
                path = Path(f"{pidfile}{suffix}")
                wait_until(lambda p=path: p.exists() and p.read_text(), 30, what=f"daemon {suffix}")
                pids.append(int(path.read_text()))
            if how == "cancelled":
                c.cancel(run.run_id, "d")
            st = run.wait(timeout=60)
            want = {"completed": "COMPLETED", "cancelled": "CANCELLED", "timeout": "DEAD"}[how]
            assert st["jobs"]["d"]["state"] == want, st
        for pid in pids:
            wait_until(lambda p=pid: process_gone(p), 10, what=f"daemon {pid} of a {how} job to be killed")
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)  # only the daemons this test started
            except ProcessLookupError:
                pass
