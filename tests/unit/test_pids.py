"""The per-host PID registry: a dead worker's job groups are killed, nothing else is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import process_gone, wait_until
from titan_zmq.worker import pids
from titan_zmq.worker.pids import PidRegistry, live_entries

# A "worker" that starts two job groups, finishes one of them, and dies without cleaning up.
DYING_OWNER = textwrap.dedent("""
    import os, subprocess, sys, time
    from titan_zmq.worker.pids import PidRegistry
    reg = PidRegistry(sys.argv[1])
    kept = subprocess.Popen(["sleep", "60"], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reg.add(kept.pid, time.time() - 2)
    done = subprocess.Popen(["sleep", "60"], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reg.add(done.pid, time.time() - 2)
    reg.remove(done.pid)
    print(kept.pid, done.pid, flush=True)
    os._exit(0)
""")


def test_live_entries_replays_adds_and_removes_and_ignores_a_torn_line() -> None:
    text = "+ 10 5.00\n+ 11 6.00\n- 10\nnonsense\n+ x 1\n+ 12 7.00\n+ 13 8."
    assert live_entries(text) == {11: 6.0, 12: 7.0}


def test_a_dead_workers_listed_groups_are_killed_and_its_file_removed(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", DYING_OWNER, str(tmp_path)], capture_output=True, text=True,
                         check=True, timeout=30, cwd=Path(__file__).parents[2])
    kept, done = (int(p) for p in out.stdout.split())
    try:
        assert not process_gone(kept) and not process_gone(done)
        files = list((tmp_path / "pids").glob("*.log"))
        assert len(files) == 1
        reaper = PidRegistry(tmp_path)
        assert reaper.reap() == 1
        wait_until(lambda: process_gone(kept), timeout=10, what="the orphaned group to be killed")
        assert not process_gone(done), "a group its worker had finished with was killed"
        assert not files[0].exists()
        assert reaper.reap() == 0
        reaper.close()
    finally:
        for pid in (kept, done):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_live_workers_groups_are_left_alone(tmp_path: Path) -> None:
    owner = PidRegistry(tmp_path)
    job = subprocess.Popen(["sleep", "60"], start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        owner.add(job.pid, time.time() - 2)
        other = PidRegistry.__new__(PidRegistry)  # a second worker of the same host, as another process sees it
        other.dir, other.me = owner.dir, -1
        assert other.reap() == 0
        assert job.poll() is None and owner.path.exists()
    finally:
        job.kill()
        job.wait()
    owner.remove(job.pid)
    owner.close()
    assert not owner.path.exists(), "a worker that stops with no job left leaves no file"


def test_the_file_is_compacted_and_keeps_the_live_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pids, "COMPACT_BYTES", 200)
    reg = PidRegistry(tmp_path)
    reg.add(99999, 1.0)
    for pgid in range(1000, 1100):
        reg.add(pgid, 2.0)
        reg.remove(pgid)
    assert reg.path.stat().st_size < 400
    assert live_entries(reg.path.read_text()) == {99999: 1.0}
    reg.add(4242, 3.0)  # still appending to the new file
    assert live_entries(reg.path.read_text()) == {99999: 1.0, 4242: 3.0}
    reg.close()
    assert reg.path.exists(), "a file that still lists groups stays for the next reaper"
