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
