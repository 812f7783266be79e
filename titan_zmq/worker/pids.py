"""A per-host registry of job process groups, so no dead worker leaves orphans running.

Each worker appends to its own file ``<workspace>/pids/<owner pid>_<owner start time>.log``: a line
``+ <pgid> <group start bound>`` when it starts a job and ``- <pgid>`` when the job is over (one
``write`` to an open file per event, no file created per job).  Any worker on the host sweeps the
registry at start and every few seconds: for a file whose owner is gone, the groups still listed are
killed and the file removed.  Processes are matched by process group *and* start time (never by pid
alone), so a recycled pid is never killed.  A half-written last line (the owner died mid-write) is ignored.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import psutil

log = logging.getLogger(__name__)
SLACK = 0.05  # seconds of clock granularity allowed when comparing process start times
COMPACT_BYTES = 1 << 20  # rewrite the file with only the live entries once it grows past this


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def live_entries(text: str) -> dict[int, float]:
    """pgid -> group start bound of the groups a registry file still lists."""
    live: dict[int, float] = {}
    for line in text.split("\n")[:-1]:  # the part after the last newline is unfinished
        parts = line.split()
        try:
            if parts[0] == "+" and len(parts) == 3:
                live[int(parts[1])] = float(parts[2])
            elif parts[0] == "-" and len(parts) == 2:
                live.pop(int(parts[1]), None)
        except (IndexError, ValueError):
            continue
    return live


class PidRegistry:
    def __init__(self, root: Path):
        self.dir = Path(root) / "pids"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.me = os.getpid()
        self.my_ctime = _create_time(self.me) or 0.0
        self.path = self.dir / f"{self.me}_{self.my_ctime:.2f}.log"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        self._size = 0
        self._mine: dict[int, float] = {}  # pgid -> group start bound

    def add(self, pgid: int, started: float) -> None:
        """Record a job's process group; ``started`` is a time no later than its leader's start."""
        self._mine[pgid] = started
        self._write(f"+ {pgid} {started:.2f}\n")

    def remove(self, pgid: int) -> None:
        if self._mine.pop(pgid, None) is not None:
            self._write(f"- {pgid}\n")
            if self._size > COMPACT_BYTES:
                self._compact()

    def close(self) -> None:
        """The worker stops with no job left: its file goes too."""
        os.close(self._fd)
        if not self._mine:
            self.path.unlink(missing_ok=True)

    def reap(self) -> int:
        """Kill the process groups of dead workers on this host; returns how many groups were killed."""
        killed = 0
        for path in self.dir.glob("*.log"):
            try:
                owner, owner_ctime = path.stem.split("_")
                if int(owner) == self.me:
                    continue
                ctime = _create_time(int(owner))
                if ctime is not None and abs(ctime - float(owner_ctime)) < SLACK + 0.01:
                    continue  # its worker is alive: not orphans
                entries = live_entries(path.read_text(errors="replace"))
            except (ValueError, FileNotFoundError):
                continue  # not one of ours, or another worker reaped it first
            for pgid, started in entries.items():
                if self._kill_group(pgid, started):
                    killed += 1
                    log.warning("killed the orphaned process group %s of a dead worker (pid %s)", pgid, owner)
            path.unlink(missing_ok=True)
        return killed

    def _write(self, line: str) -> None:
        data = line.encode()
        os.write(self._fd, data)
        self._size += len(data)

    def _compact(self) -> None:
        """Replace the file by one listing only the live groups; the new one is complete before the old goes."""
        tmp = self.path.with_suffix(".tmp")
        text = "".join(f"+ {pgid} {started:.2f}\n" for pgid, started in self._mine.items())
        tmp.write_text(text)
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(text)

    @staticmethod
    def _kill_group(pgid: int, since: float) -> bool:
        """SIGKILL the members of ``pgid`` that started no earlier than the group's leader did."""
        hit = False
        for proc in psutil.process_iter(["pid", "create_time"]):
            try:
                if os.getpgid(proc.pid) != pgid or proc.info["create_time"] + SLACK < since:
                    continue
                os.kill(proc.pid, signal.SIGKILL)
                hit = True
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return hit
