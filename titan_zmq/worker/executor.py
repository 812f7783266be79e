"""Runs job attempts as OS processes and collects their output, without threads.

Every attempt runs in its own session (so its own process group); cancel and timeout kill
the whole group, and when an attempt's leader exits, whatever it left running is killed too:
the group, and processes that left it (see :mod:`.subreaper`; the worker is a child subreaper).  The worker loop polls the attempts' pipes next to its socket; this module
turns bytes into numbered line batches and tells the loop when an attempt is over.  Output
is cut into batches as it arrives, so memory stays bounded whatever a job prints.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

from titan_zmq import defaults
from titan_zmq.attempt import AttemptKey
from titan_zmq.worker import subreaper

STREAMS = ("stdout", "stderr")


@dataclass(eq=False)
class Attempt:
    key: AttemptKey
    proc: subprocess.Popen[bytes]
    started_at: float
    deadline: float | None
    partial: dict[str, bytearray] = field(default_factory=lambda: {s: bytearray() for s in STREAMS})
    open_fds: dict[int, str] = field(default_factory=dict)  # fd -> stream name, until EOF
    lines: list[list[str]] = field(default_factory=list)  # [stream, text] not yet batched
    line_bytes: int = 0
    first_line_at: float | None = None
    seq: int = 0  # next LOG_BATCH sequence number
    pidfd: int | None = None  # readable when the process exits (Linux pidfd), so nothing polls
    may_have_exited: bool = True  # without a pidfd always; with one, once it became readable
    kill_reason: str | None = None
    sigkill_at: float | None = None
    eof_deadline: float | None = None  # after the leader exited: when to stop waiting for pipe EOF
    exit_code: int | None = None
    left_behind: bool = False  # a process of it outlived its leader (killed now, but it may have written since)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def done(self) -> bool:
        return self.exit_code is not None and not self.open_fds


@dataclass(frozen=True)
class Finished:
    key: AttemptKey
    exit_code: int
    error: str | None
    # no process of its group outlived the leader, and no escaped one was killed meanwhile (what escaped
    # is seen only with reap_escaped): its directory may serve another attempt
    alone: bool = True


class Executor:
    """Starts attempts as process groups and watches them: output read in batches, exits and
    timeouts noticed, whole groups killed. No sockets: the agent moves what it produces."""

    def __init__(self, kill_grace: float = defaults.KILL_GRACE, reap_escaped: bool = False):
        self.kill_grace = kill_grace
        # only a process whose every child is a job may do this (the worker, a child subreaper):
        # any other child that is not a live job leader would be killed
        self.reap_escaped = reap_escaped
        self.attempts: dict[AttemptKey, Attempt] = {}
        self._by_fd: dict[int, Attempt] = {}
        self._stdin = os.open(os.devnull, os.O_RDONLY)  # every job's stdin, opened once
        self._resolved: dict[tuple[str, str | None], str] = {}  # (command, PATH) -> its executable

    def start(self, key: AttemptKey, argv: list[str], env: dict[str, str], cwd: str, timeout: float | None) -> Attempt:
        try:
            proc = self._spawn(argv, env, cwd, self._executable(argv[0], env.get("PATH")))
        except FileNotFoundError:
            if not self._resolved.pop((argv[0], env.get("PATH")), None):
                raise
            proc = self._spawn(argv, env, cwd, None)  # the cached executable went away: search again
        now = time.time()
        att = Attempt(key=key, proc=proc, started_at=now, deadline=now + timeout if timeout else None)
        for stream, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            assert pipe is not None
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            att.open_fds[fd] = stream
            self._by_fd[fd] = att
        if hasattr(os, "pidfd_open"):
            try:
                att.pidfd = os.pidfd_open(proc.pid)
                self._by_fd[att.pidfd] = att
                att.may_have_exited = False
            except OSError:
                att.pidfd = None
        self.attempts[key] = att
        return att

    def _spawn(self, argv: list[str], env: dict[str, str], cwd: str, executable: str | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv, executable=executable, cwd=cwd, env=env, stdin=self._stdin, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
            bufsize=0,  # the pipes are read with os.read: no buffer objects (saves a seek and an ioctl each)
        )

    def _executable(self, command: str, path: str | None) -> str | None:
        """The file a bare command name runs, looked up in PATH once rather than by every spawn."""
        found = self._resolved.get((command, path))
        if found is not None:
            return found
        if "/" in command or not path or any(not d.startswith("/") for d in path.split(os.pathsep)):
            return None  # a path already, or a PATH with relative entries (they mean the job's cwd)
        found = shutil.which(command, path=path)
        if found is not None:  # else the spawn fails with the usual "No such file or directory"
            self._resolved[command, path] = found
        return found

    @property
    def needs_polling(self) -> bool:
        """Without pidfds, the loop must wake up now and then to notice exits."""
        return any(a.pidfd is None and a.exit_code is None for a in self.attempts.values())

    def fds(self) -> list[int]:
        return list(self._by_fd)

    def read(self, fd: int) -> None:
        """Read what a pipe has (non-blocking) and cut it into lines."""
        att = self._by_fd.get(fd)
        if att is None:
            return
        if fd == att.pidfd:  # the process exited: poll() will collect it
            self._close_pidfd(att)
            att.may_have_exited = True
            return
        stream = att.open_fds[fd]
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self._close_fd(att, fd)
            return
        buf = att.partial[stream]
        buf += chunk
        cap = defaults.LOG_MAX_LINE
        while True:
            nl = buf.find(b"\n", 0, cap + 1)
            if nl < 0:
                if len(buf) >= cap:  # a line longer than the cap is cut into pieces
                    self._line(att, stream, bytes(buf[:cap]))
                    del buf[:cap]
                    continue
                break
            self._line(att, stream, bytes(buf[:nl]))
            del buf[: nl + 1]

    def batches(self, now: float, force: bool = False) -> list[tuple[Attempt, int, list[list[str]]]]:
        """Line batches ready to send: full ones, ones older than the flush interval, or all (force)."""
        out = []
        for att in self.attempts.values():
            while att.lines:
                full = len(att.lines) >= defaults.LOG_BATCH_LINES or att.line_bytes >= defaults.LOG_BATCH_BYTES
                old = att.first_line_at is not None and now - att.first_line_at >= defaults.LOG_FLUSH_INTERVAL
                if not (force or old or full):
                    break
                n = size = 0
                for _, text in att.lines:  # take lines up to the caps (at least one)
                    cost = len(text) + 16
                    if n and (n >= defaults.LOG_BATCH_LINES or size + cost > defaults.LOG_BATCH_BYTES):
                        break
                    n, size = n + 1, size + cost
                batch, att.lines = att.lines[:n], att.lines[n:]
                att.line_bytes -= size
                out.append((att, att.seq, batch))
                att.seq += 1
                if not att.lines:
                    att.line_bytes, att.first_line_at = 0, None
        return out

    def next_flush(self) -> float | None:
        times = [a.first_line_at + defaults.LOG_FLUSH_INTERVAL for a in self.attempts.values() if a.first_line_at]
        times += [a.deadline for a in self.attempts.values() if a.deadline and a.exit_code is None]
        times += [a.sigkill_at for a in self.attempts.values() if a.sigkill_at]
        times += [a.eof_deadline for a in self.attempts.values() if a.eof_deadline and a.open_fds]
        return min(times) if times else None

    def kill(self, key: AttemptKey, reason: str, grace: float | None = None) -> bool:
        """SIGTERM to the attempt's group, SIGKILL after ``grace`` seconds (default: the executor's)."""
        att = self.attempts.get(key)
        if att is None or att.kill_reason is not None:
            return False
        att.kill_reason = reason
        _killpg(att.pid, signal.SIGTERM)
        att.sigkill_at = time.time() + (self.kill_grace if grace is None else grace)
        return True

    def poll(self, now: float) -> list[Finished]:
        """Enforce timeouts and kill grace; return the attempts that are completely over."""
        over: list[Attempt] = []
        exited = False
        for key, att in list(self.attempts.items()):
            if att.deadline is not None and now >= att.deadline and att.exit_code is None and att.kill_reason is None:
                self.kill(key, f"timeout after {att.deadline - att.started_at:g}s")
            if att.sigkill_at is not None and now >= att.sigkill_at:
                _killpg(att.pid, signal.SIGKILL)
                att.sigkill_at = None
            if att.exit_code is None and att.may_have_exited and att.proc.poll() is not None:
                att.exit_code = att.proc.returncode
                # the job is over when its leader exits: nothing it left behind keeps running
                att.left_behind = _killpg(att.pid, signal.SIGKILL)
                att.eof_deadline = now + self.kill_grace
                exited = True
            if att.open_fds and att.eof_deadline is not None and now >= att.eof_deadline:
                # a descendant that left the process group still holds the pipes: stop waiting for it
                att.left_behind = True
                for fd in list(att.open_fds):
                    self.read(fd)
                    self._close_fd(att, fd)
            if att.done:
                for stream, buf in att.partial.items():
                    if buf:
                        self._line(att, stream, bytes(buf))
                        buf.clear()
                over.append(att)
        if exited and self.reap_escaped:  # and what left the group (double-forked daemons), before the outcome
            self.sweep()
        return [Finished(a.key, self._exit_code(a), self._error(a), alone=not a.left_behind) for a in over]

    def sweep(self) -> int:
        """Kill processes that escaped the groups of attempts whose leader exited; reap adopted ones."""
        live = {k: a for k, a in self.attempts.items() if a.exit_code is None}
        killed = subreaper.sweep({k: a.started_at for k, a in live.items()}, {a.pid for a in live.values()})
        if killed:  # whose they were is not known: every attempt whose leader has exited counts as not alone
            for att in self.attempts.values():
                if att.exit_code is not None:
                    att.left_behind = True
        return killed

    def forget(self, key: AttemptKey) -> None:
        att = self.attempts.pop(key, None)
        if att is not None:
            for fd in list(att.open_fds):
                self._close_fd(att, fd)
            self._close_pidfd(att)

    def close(self) -> None:
        os.close(self._stdin)

    def kill_all(self, reason: str) -> None:
        for key in list(self.attempts):
            self.kill(key, reason)

    def running(self) -> list[AttemptKey]:
        return list(self.attempts)

    # ---- internals ---------------------------------------------------------------------------

    def _line(self, att: Attempt, stream: str, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        att.lines.append([stream, text])
        att.line_bytes += len(text) + 16
        if att.first_line_at is None:
            att.first_line_at = time.time()

    def _close_pidfd(self, att: Attempt) -> None:
        if att.pidfd is not None:
            self._by_fd.pop(att.pidfd, None)
            os.close(att.pidfd)
            att.pidfd = None

    def _close_fd(self, att: Attempt, fd: int) -> None:
        att.open_fds.pop(fd, None)
        self._by_fd.pop(fd, None)
        for pipe in (att.proc.stdout, att.proc.stderr):
            if pipe is not None and not pipe.closed and pipe.fileno() == fd:
                pipe.close()

    @staticmethod
    def _exit_code(att: Attempt) -> int:
        code = att.exit_code if att.exit_code is not None else -1
        return 128 - code if code < 0 else code  # killed by signal N -> 128 + N, like a shell

    @staticmethod
    def _error(att: Attempt) -> str | None:
        if att.kill_reason:
            return f"killed: {att.kill_reason}"
        if att.exit_code is not None and att.exit_code < 0:
            return f"killed by signal {-att.exit_code}"
        if att.exit_code:
            return f"exit code {att.exit_code}"
        return None


def _killpg(pid: int, sig: int) -> bool:
    """Signal the process group; False when it has no process left (or none we may signal)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True

