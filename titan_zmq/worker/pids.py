"""A per-host registry of job process groups, so no dead worker leaves orphans running.

Each attempt's process group is recorded in ``<workspace>/pids/<pgid>.json`` together with
the worker that owns it (pid and start time).  Any worker on the host sweeps the registry at
start and every few seconds: a group whose owner is gone is killed.  Processes are matched
by process group *and* start time (never by pid alone), so a recycled pid is never killed.
"""

from __future__ import annotations

import json
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

    def add(self, pgid: int, key: tuple[str, str, int], started: float) -> None:
        """Record a job's process group; ``started`` is a time no later than its leader's start."""
        entry = {"owner": self.me, "owner_ctime": self.my_ctime, "pgid": pgid, "ctime": started,
                 "attempt": list(key)}
        fd = os.open(self.dir / f"{pgid}.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, json.dumps(entry).encode())  # one small write; a reader sees all or nothing useful
        finally:
            os.close(fd)

    def remove(self, pgid: int) -> None:
        try:
            (self.dir / f"{pgid}.json").unlink()
        except FileNotFoundError:
            pass

    def reap(self) -> int:
        """Kill the process groups of dead workers on this host; returns how many groups were killed."""
        killed = 0
        for path in self.dir.glob("*.json"):
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if entry.get("owner") == self.me:
                continue
            owner_ctime = _create_time(int(entry["owner"]))
            if owner_ctime is not None and abs(owner_ctime - float(entry["owner_ctime"])) < SLACK:
                continue  # its worker is alive: not an orphan
            if self._kill_group(int(entry["pgid"]), float(entry["ctime"])):
                killed += 1
                log.warning("killed orphaned job %s (process group %s) of a dead worker",
                            "/".join(map(str, entry.get("attempt", []))), entry["pgid"])
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
