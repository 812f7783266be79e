"""The process executor, driven the way the worker loop drives it (real subprocesses, no sockets)."""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import process_gone
from titan_zmq import defaults
from titan_zmq.worker.executor import Executor, Finished

KEY = ("run1", "job1", 1)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


class Driven:
    def __init__(self) -> None:
        self.batches: list[tuple[tuple, int, list[list[str]]]] = []  # (attempt key, seq, lines)
        self.finished: list[Finished] = []

    def lines(self, stream: str | None = None) -> list[str]:
        return [text for _, _, batch in self.batches for s, text in batch if stream is None or s == stream]

    def seqs(self, key: tuple = KEY) -> list[int]:
        return [seq for k, seq, _ in self.batches if k == key]


FDS_PER_PIDFD = 1 if hasattr(os, "pidfd_open") else 0  # stdout, stderr and, on Linux, a pidfd


def drive(ex: Executor, timeout: float = 10.0, until=None, out: Driven | None = None) -> Driven:
    """Poll the executor's fds and clock like the worker loop, until an attempt finishes (or ``until()``)."""
    out = out or Driven()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fds = ex.fds()
        if fds:
            ready, _, _ = select.select(fds, [], [], 0.02)
            for fd in ready:
                ex.read(fd)
        else:
            time.sleep(0.01)
        now = time.time()
        out.batches += [(att.key, seq, lines) for att, seq, lines in ex.batches(now)]
        fin = ex.poll(now)
        if fin:
            out.batches += [(att.key, seq, lines) for att, seq, lines in ex.batches(now, force=True)]
            out.finished = fin
            for f in fin:
                ex.forget(f.key)
            return out
        if until is not None and until(out):
            return out
    raise AssertionError(f"nothing finished within {timeout}s; got {out.lines()[-5:]}")


def wait_gone(pids: list[int], within: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [p for p in pids if not process_gone(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if not process_gone(p)]


@pytest.fixture
def ex():
    executor = Executor(kill_grace=0.3)
    yield executor
    for key in list(executor.attempts):  # never leave a process behind
        att = executor.attempts[key]
        try:
            os.killpg(att.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        att.proc.wait(timeout=5)
        executor.forget(key)


def test_lines_batches_and_exit_code(ex: Executor, tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "print('one'); time.sleep(0.15)\n"
        "print('two | with, delimiters'); time.sleep(0.15)\n"
        "print('ünïcødé ✓', file=sys.stderr); time.sleep(0.15)\n"
        "print('three')\n"
    )
    att = ex.start(KEY, py(code), env(), str(tmp_path), timeout=None)
    assert att.pid > 0 and len(ex.fds()) == 2 + FDS_PER_PIDFD
    out = drive(ex)
    assert out.finished == [Finished(KEY, 0, None)]
    assert out.lines("stdout") == ["one", "two | with, delimiters", "three"]
    assert out.lines("stderr") == ["ünïcødé ✓"]
    seqs = out.seqs()
    assert len(seqs) >= 2, "output spread over time comes out in several batches"
    assert seqs == list(range(len(seqs)))
    assert ex.fds() == [] and ex.running() == []


def test_a_bare_command_is_found_in_the_jobs_path_and_found_again_when_it_moves(ex: Executor, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for d in (first, second):
        d.mkdir()
    tool = first / "titan-test-tool"
    tool.write_text('#!/bin/sh\necho "from first as $0"\n')
    tool.chmod(0o755)
    path = f"{first}{os.pathsep}{second}{os.pathsep}/usr/bin{os.pathsep}/bin"
    ex.start(KEY, ["titan-test-tool"], env(PATH=path), str(tmp_path), timeout=None)
    assert drive(ex).lines() == [f"from first as {tool}"]
    tool.rename(second / "titan-test-tool")  # the cached location is gone
    key2 = ("run1", "job1", 2)
    ex.start(key2, ["titan-test-tool"], env(PATH=path), str(tmp_path), timeout=None)
    assert drive(ex).lines() == [f"from first as {second / 'titan-test-tool'}"]
    with pytest.raises(FileNotFoundError):
        ex.start(("run1", "job1", 3), ["titan-no-such-tool"], env(PATH=path), str(tmp_path), timeout=None)


def test_nonzero_exit_code(ex: Executor, tmp_path: Path) -> None:
    ex.start(KEY, py("import sys; print('bye'); sys.exit(3)"), env(), str(tmp_path), timeout=None)
    out = drive(ex)
    assert out.finished == [Finished(KEY, 3, "exit code 3")]
    assert out.lines() == ["bye"]


def test_env_and_cwd_are_used(ex: Executor, tmp_path: Path) -> None:
    code = "import os; print(os.environ['TITAN_JOB_ID']); print(os.getcwd())"
    ex.start(KEY, py(code), env(TITAN_JOB_ID="job1"), str(tmp_path), timeout=None)
    out = drive(ex)
    assert out.lines() == ["job1", str(tmp_path.resolve())]


def test_twenty_thousand_lines_in_order(ex: Executor, tmp_path: Path) -> None:
    ex.start(KEY, py("for i in range(20000): print(i)"), env(PYTHONUNBUFFERED="0"), str(tmp_path), timeout=None)
    out = drive(ex, timeout=20)
    assert out.finished[0].exit_code == 0
    assert out.lines("stdout") == [str(i) for i in range(20000)]
    seqs = out.seqs()
    assert seqs == list(range(len(seqs)))


def test_partial_last_line_is_flushed(ex: Executor, tmp_path: Path) -> None:
    code = "import sys; sys.stdout.write('first\\nno newline at the end'); sys.stderr.write('err tail')"
    ex.start(KEY, py(code), env(), str(tmp_path), timeout=None)
    out = drive(ex)
    assert out.lines("stdout") == ["first", "no newline at the end"]
    assert out.lines("stderr") == ["err tail"]


def test_endless_line_without_newline_is_split(ex: Executor, tmp_path: Path) -> None:
    n = defaults.LOG_MAX_LINE * 2 + 100
    ex.start(KEY, py(f"import sys; sys.stdout.write('x' * {n})"), env(), str(tmp_path), timeout=None)
    lines = drive(ex).lines("stdout")
    assert "".join(lines) == "x" * n
    assert [len(line) for line in lines] == [defaults.LOG_MAX_LINE, defaults.LOG_MAX_LINE, 100]


def test_long_line_with_newline_is_split(ex: Executor, tmp_path: Path) -> None:
    n = defaults.LOG_MAX_LINE * 2 + 100
    ex.start(KEY, py(f"import sys; sys.stdout.write('x' * {n} + '\\nend\\n')"), env(), str(tmp_path), timeout=None)
    lines = drive(ex).lines("stdout")
    assert lines[-1] == "end" and "".join(lines[:-1]) == "x" * n
    assert all(len(line) <= defaults.LOG_MAX_LINE for line in lines)


def test_crlf_and_invalid_utf8(ex: Executor, tmp_path: Path) -> None:
    code = r"import sys; sys.stdout.buffer.write(b'dos\r\nbad \xff byte\n')"
    ex.start(KEY, py(code), env(), str(tmp_path), timeout=None)
    assert drive(ex).lines() == ["dos", "bad \ufffd byte"]


def test_kill_kills_the_whole_process_group(ex: Executor, tmp_path: Path) -> None:
    att = ex.start(KEY, ["bash", "-c", "sleep 300 & sleep 300; wait"], env(), str(tmp_path), timeout=None)
    leader = psutil.Process(att.pid)
    deadline = time.monotonic() + 5
    while len(leader.children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    children = [c.pid for c in leader.children()]
    assert len(children) == 2, "bash should have started two sleeps"
    t0 = time.monotonic()
    assert ex.kill(KEY, "cancelled by user") is True
    assert ex.kill(KEY, "again") is False  # a second kill is a no-op
    out = drive(ex, timeout=5)
    assert time.monotonic() - t0 < 5
    fin = out.finished[0]
    assert (fin.key, fin.exit_code, fin.error) == (KEY, 128 + signal.SIGTERM, "killed: cancelled by user")
    assert wait_gone([att.pid, *children]) == [], "processes of the group survived the kill"


def test_sigterm_ignored_gets_sigkill_after_grace(ex: Executor, tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready'); time.sleep(60)"
    att = ex.start(KEY, py(code), env(), str(tmp_path), timeout=None)
    out = drive(ex, until=lambda o: "ready" in o.lines())
    ex.kill(KEY, "cancelled")
    t0 = time.monotonic()
    out = drive(ex, timeout=5, out=out)
    assert out.finished == [Finished(KEY, 128 + signal.SIGKILL, "killed: cancelled")]
    assert time.monotonic() - t0 >= 0.25  # SIGKILL only after the grace period
    assert wait_gone([att.pid]) == []


def test_leader_exit_kills_what_it_left_behind(ex: Executor, tmp_path: Path) -> None:
    code = "import subprocess, sys; p = subprocess.Popen(['sleep', '300']); print(p.pid)"
    ex.start(KEY, py(code), env(), str(tmp_path), timeout=None)
    t0 = time.monotonic()
    out = drive(ex, timeout=5)
    assert time.monotonic() - t0 < 5
    assert out.finished == [Finished(KEY, 0, None, alone=False)]  # its directory is not handed on
    orphan = int(out.lines("stdout")[0])
    assert wait_gone([orphan]) == []


def test_timeout_kills_and_reports(ex: Executor, tmp_path: Path) -> None:
    att = ex.start(KEY, ["bash", "-c", "sleep 300 & sleep 300; wait"], env(), str(tmp_path), timeout=0.3)
    assert att.deadline is not None and ex.next_flush() == att.deadline
    t0 = time.monotonic()
    out = drive(ex, timeout=5)
    elapsed = time.monotonic() - t0
    (fin,) = out.finished
    assert 0.25 <= elapsed < 5
    assert fin.exit_code == 128 + signal.SIGTERM
    assert fin.error is not None and "timeout" in fin.error and "0.3" in fin.error
    assert wait_gone([att.pid]) == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGUSR1])
def test_exit_by_signal_maps_to_128_plus_n(ex: Executor, tmp_path: Path, sig: signal.Signals) -> None:
    ex.start(KEY, py(f"import os; os.kill(os.getpid(), {int(sig)})"), env(), str(tmp_path), timeout=None)
    (fin,) = drive(ex).finished
    assert fin.exit_code == 128 + int(sig)
    assert fin.error == f"killed by signal {int(sig)}"


def test_several_attempts_at_once(ex: Executor, tmp_path: Path) -> None:
    keys = [("r", f"j{i}", 1) for i in range(3)]
    for i, key in enumerate(keys):
        ex.start(key, py(f"import sys; print('job {i}'); sys.exit({i})"), env(), str(tmp_path), timeout=None)
    assert len(ex.fds()) == 3 * (2 + FDS_PER_PIDFD) and sorted(ex.running()) == sorted(keys)
    done: dict[tuple, int] = {}
    out = Driven()
    while len(done) < 3:
        out = drive(ex, out=out)
        done.update({f.key: f.exit_code for f in out.finished})
    assert done == {keys[0]: 0, keys[1]: 1, keys[2]: 2}
    assert sorted(out.lines()) == ["job 0", "job 1", "job 2"]
    for i, key in enumerate(keys):  # each attempt numbers its own batches from 0
        assert out.seqs(key) == list(range(len(out.seqs(key)))) and out.seqs(key)
        assert [t for k, _, b in out.batches if k == key for _, t in b] == [f"job {i}"]


def test_batches_respect_line_and_byte_caps(ex: Executor, tmp_path: Path) -> None:
    att = ex.start(KEY, py("for i in range(3000): print(i)"), env(PYTHONUNBUFFERED="0"), str(tmp_path), timeout=None)
    att.proc.wait(timeout=10)  # all output (< 64 KiB) now sits in the pipe
    out = drive(ex)
    assert out.lines() == [str(i) for i in range(3000)]
    for _, _, lines in out.batches:
        assert len(lines) <= defaults.LOG_BATCH_LINES
        assert sum(len(text.encode()) for _, text in lines) <= defaults.LOG_BATCH_BYTES


def test_a_descendant_that_leaves_the_group_does_not_hold_the_attempt_open(tmp_path) -> None:
    """A daemonised grandchild (setsid) keeps the pipes open; the attempt still ends after the grace."""
    ex = Executor(kill_grace=0.5)
    key = ("r", "daemon", 1)
    pidfile = tmp_path / "daemon.pid"
    ex.start(key, ["bash", "-c", f"setsid sleep 30 & echo $! > {pidfile}; echo hi"], dict(os.environ),
             str(tmp_path), None)
    t0 = time.monotonic()
    try:
        out = drive(ex, timeout=10)
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), 9)  # the daemon this test started
            except ProcessLookupError:
                pass
    assert out.finished[0].key == key and out.finished[0].exit_code == 0
    assert time.monotonic() - t0 < 5
    assert "hi" in [line for _, _, lines in out.batches for _, line in lines]
