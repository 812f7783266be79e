"""No process a job starts outlives the job: the worker is a child subreaper and kills what escaped.

A job that double-forks and calls ``setsid`` leaves its process group, so killing the group misses
it.  With ``PR_SET_CHILD_SUBREAPER`` such orphans are re-parented to the worker instead of init, so
every process a job left behind is, once its own parent is gone, a child of the worker that is not
one of the job leaders the worker started: an *adopted* process.  Finding them is one read of
``/proc/self/task/*/children`` (tens of microseconds), done whenever a job leader exits and once a
second.  An adopted process belongs to the attempt its environment names (``TITAN_RUN_ID``,
``TITAN_JOB_ID``, ``TITAN_ATTEMPT``: every job process inherits them); it is killed, with its
descendants, once that attempt is no longer live.  One whose environment names no attempt (it was
started with a clean environment) is killed once no attempt that was live when it started is live.
Adopted processes that exited are reaped; job leaders are not (their ``Popen`` needs the exit code).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from collections.abc import Mapping

import psutil

from titan_zmq.attempt import AttemptKey

log = logging.getLogger(__name__)
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
START_SLACK = 2.0  # seconds: process start times have coarse granularity (boot time in whole seconds)


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False where that is not possible."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def children() -> set[int]:
    """The pids of this process's children: those of its main thread, which forks every job and which
    the kernel gives adopted orphans to (the first live thread of the subreaper)."""
    try:  # os-level calls: this runs at every job end, and a file object costs more than the read
        fd = os.open(f"/proc/self/task/{os.getpid()}/children", os.O_RDONLY)
    except (FileNotFoundError, PermissionError):  # a kernel without /proc/.../children
        return {c.pid for c in psutil.Process().children()}
    try:
        data = os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    return {int(p) for p in data.split()} if data.strip() else set()


def attempt_of(pid: int) -> AttemptKey | None:
    """The attempt a process's environment names, if it names one."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    try:
        return AttemptKey(env[b"TITAN_RUN_ID"].decode(), env[b"TITAN_JOB_ID"].decode(), int(env[b"TITAN_ATTEMPT"]))
    except (KeyError, ValueError):
        return None


def sweep(live: Mapping[AttemptKey, float], leaders: set[int]) -> int:
    """Kill adopted processes of attempts that are over (``live``: attempt -> start time) and reap
    adopted processes that exited; returns how many processes were killed."""
    killed = 0
    adopted = children() - leaders
    if not adopted:
        return 0
    for pid in adopted:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if done:  # an adopted process that had exited: reaped
            continue
        if _belongs_to_live(pid, live):
            continue
        killed += _kill_tree(pid)
    return killed


def _belongs_to_live(pid: int, live: Mapping[AttemptKey, float]) -> bool:
    key = attempt_of(pid)
    if key is not None:
        return key in live
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return False
    return any(t <= started + START_SLACK for t in live.values())


def _kill_tree(pid: int) -> int:
    try:
        tree = [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        tree = [pid]
    n = 0
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
            n += 1
        except (ProcessLookupError, PermissionError):
            continue
    log.info("killed %d process(es) left behind by a finished job (pid %d and its descendants)", n, pid)
    return n
