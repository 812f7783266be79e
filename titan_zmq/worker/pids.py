"""A per-host registry of job process groups, so no dead worker leaves orphans running.

Each attempt's process group is recorded in ``<workspace>/pids/`` as an empty file named
``<pgid>_<owner pid>_<owner start time>_<group start bound>.pid``.  Any worker on the host sweeps the registry at
start and every few seconds: a group whose owner is gone is killed.  Processes are matched
by process group *and* start time (never by pid alone), so a recycled pid is never killed.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import psutil

log = logging.getLogger("titan.worker")
SLACK = 0.05  # seconds of clock granularity allowed when comparing process start times


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class PidRegistry:
    def __init__(self, root: Path):
        self.dir = Path(root) / "pids"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.me = os.getpid()
        self.my_ctime = _create_time(self.me) or 0.0
        self._mine: dict[int, str] = {}  # pgid -> entry file name

    def add(self, pgid: int, key: tuple[str, str, int], started: float) -> None:
        """Record a job's process group; ``started`` is a time no later than its leader's start.

        The entry is an empty file whose name says it all (one syscall pair, nothing to parse half-written).
        """
        name = f"{pgid}_{self.me}_{self.my_ctime:.2f}_{started:.2f}.pid"
        os.close(os.open(self.dir / name, os.O_WRONLY | os.O_CREAT, 0o644))
        self._mine[pgid] = name

    def remove(self, pgid: int) -> None:
        name = self._mine.pop(pgid, None)
        if name is not None:
            try:
                os.unlink(self.dir / name)
            except FileNotFoundError:
                pass

    def reap(self) -> int:
        """Kill the process groups of dead workers on this host; returns how many groups were killed."""
        killed = 0
        for path in self.dir.glob("*.pid"):
            try:
                pgid, owner, owner_ctime, started = path.stem.split("_")
                if int(owner) == self.me:
                    continue
                ctime = _create_time(int(owner))
                if ctime is not None and abs(ctime - float(owner_ctime)) < SLACK + 0.01:
                    continue  # its worker is alive: not an orphan
                if self._kill_group(int(pgid), float(started)):
                    killed += 1
                    log.warning("killed the orphaned process group %s of a dead worker (pid %s)", pgid, owner)
            except ValueError:
                pass  # not one of ours
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        return killed

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
