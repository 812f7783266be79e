"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import socket
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import yaml

from client.cluster import LocalCluster

REPO = Path(__file__).resolve().parent.parent
PIPELINES = REPO / "pipelines"


def write_pipeline(folder: Path, doc: dict[str, Any], scripts: dict[str, str] | None = None) -> Path:
    """Write a YAML pipeline and its scripts into ``folder``; returns the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (scripts or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    path = folder / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# A script that records its start and end (with the attempt) in <workspace>/records/<run_id>.log: outside
# the run's directory, which the worker removes when the run ends.
RECORD_PY = """
import os, sys, time
name = sys.argv[1]
secs = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
records = os.path.join(os.environ["TITAN_SHARED_DIR"], "..", "..", "..", "records")
os.makedirs(records, exist_ok=True)
def note(what):
    with open(os.path.join(records, os.environ["TITAN_RUN_ID"] + ".log"), "a") as f:
        f.write(f"{name} {what} {time.time():.6f} {os.environ['TITAN_ATTEMPT']} {os.environ.get('TITAN_WORKER')}\\n")
note("start")
print(f"{name} running", flush=True)
time.sleep(secs)
note("end")
"""


def events(cluster: LocalCluster, run_id: str) -> list[tuple[str, str, float, int, str]]:
    """The (name, start|end, time, attempt, worker) records a run's RECORD_PY jobs left."""
    path = records(cluster.data_dir / "work", run_id)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        name, what, ts, attempt, worker = line.split()
        out.append((name, what, float(ts), int(attempt), worker))
    return out


def records(workspace: Path, run_id: str) -> Path:
    """Where RECORD_PY and PID_JOB-style test scripts of a run write (it outlives the run's directory)."""
    return workspace / "records" / f"{run_id}.log"


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def job_state(client: Any, run_id: str, job_id: str) -> str:
    return str(client.status(run_id)["jobs"][job_id]["state"])


def process_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie counts: it runs nothing). Never races with the exit itself."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@contextmanager
def reserved_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port held bound (never listening) for the block: nothing else can listen on it meanwhile,
    so a connection to it is refused and a request never answered."""
    with socket.socket() as s:
        s.bind((host, 0))
        yield int(s.getsockname()[1])


def port_guess(host: str = "127.0.0.1") -> int:
    """A port free right now, for a process the test starts itself; only a guess (anything may take
    it first), so the caller must start again on another guess when the bind fails."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _job_yaml(extra: str, top: str = "name: x\n") -> bytes:
    return f"{top}jobs:\n  - id: a\n    command: [echo]\n{extra}".encode()


# Pipelines wrong in one way each, as a careless or hostile user writes them (issue 8), and a phrase the
# error must contain: `pipeline.load` raises PipelineError, `titan run` prints `error: ...` and exits 2.
BAD_PIPELINES: dict[str, tuple[bytes, str]] = {
    "deeply-nested": (_job_yaml("    env: " + "[" * 100_000 + "]" * 100_000 + "\n"), "invalid YAML"),
    "nested-990": (_job_yaml("    env: " + "[" * 990 + "]" * 990 + "\n"), "jobs[0].env: expected map"),
    "not-utf8": (b"name: caf\xe9\njobs:\n  - {id: a, command: [echo]}\n", "not UTF-8 text (byte 0xe9 at offset 9)"),
    "unclosed-quote": (b"name: x\njobs:\n  - id: a\n    command: \"echo 'x\"\n", "jobs[0].command: cannot split"),
    "priority-2^64": (_job_yaml(f"    priority: {2**64}\n"), "jobs[0].priority: expected integer from"),
    "retries-2^64": (_job_yaml(f"    retries: {2**64}\n"), "jobs[0].retries: expected non-negative integer"),
    "5000-digit-int": (_job_yaml(f"    priority: {'9' * 5000}\n"), "invalid YAML"),
    "delay-inf": (_job_yaml("    delay: .inf\n"), "jobs[0].delay: expected non-negative number"),
    "delay-nan": (_job_yaml("    delay: .nan\n"), "jobs[0].delay: expected non-negative number"),
    "timeout-inf": (_job_yaml("    timeout: .inf\n"), "jobs[0].timeout: expected positive number"),
    "file-and-command": (_job_yaml("    file: a.py\n"), "give a file or a command, not both"),
    "duplicate-job-key": (_job_yaml("    command: [rm, -rf, x]\n"),
                          "line 5, column 5 invalid YAML: duplicate key 'command' (first given on line 4)"),
    "duplicate-top-key": (_job_yaml("", top="name: x\nname: y\n"), "line 2, column 1 invalid YAML: duplicate key 'name'"),
    "env-name-with-equals": (_job_yaml("    env: {'A=B': x}\n"), "jobs[0].env: 'A=B' is not a variable name"),
    "env-name-with-nul": (_job_yaml('    env: {"A\\0B": x}\n'), "is not a variable name"),
    "env-value-with-nul": (_job_yaml('    env: {A: "x\\0y"}\n'), "jobs[0].env.A: contains a NUL byte"),
    "arg-with-nul": (_job_yaml('    args: ["a\\0b"]\n'), "jobs[0].args[0]: contains a NUL byte"),
    "1mb-argument": (_job_yaml(f"    args: [{'x' * 1024 * 1024}]\n"), "jobs[0].args[0]: 1048576 bytes, over the cap"),
    "long-name": (_job_yaml("", top=f"name: {'n' * 300}\n"), "name: expected non-empty string of at most 256"),
    "long-agent-run-id": (_job_yaml("", top=f"name: x\nagent_run_id: {'a' * 300}\n"),
                          "agent_run_id: expected non-empty string of at most 256"),
    "long-hitl-message": (_job_yaml(f"    hitl_message: {'q' * 5000}\n"), "jobs[0].hitl_message: expected non-empty"),
    "long-requirement": (_job_yaml(f"    requirement: {'G' * 300}\n"), "jobs[0].requirement: expected non-empty"),
}


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
