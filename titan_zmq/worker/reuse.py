"""Cheap attempt directories: empty ones are reused within a run, scripts are linked, not rewritten.

Every attempt gets a fresh, empty working directory, and it goes when the attempt ends.  Done the
plain way (``mkdir``, write the script, ``unlink``, ``rmdir``) that is four metadata operations that
allocate or free disk blocks, about 0.2 ms of the worker's loop per job on ext4 (measured: mkdir
36-81 us, writing a small file 84 us, rmdir 65-170 us; docs/BENCHMARKS.md).  Two shortcuts keep
the guarantee and cost a fraction:

* :class:`SparePool`: an attempt directory left empty is renamed to ``@spare-<pid>-<n>`` next
  to the run's attempts (22 us) instead of removed, and the run's next attempt on this worker
  renames it into place instead of making one.  Only the directory of a job that left no process
  behind (the executor's ``Finished.alone``) is kept: nothing can write into it any more.  At most
  :data:`SPARES_PER_RUN` wait per run; they go with the run's directory.
* :class:`ScriptCache`: a job's inline script is written once per run and worker; later attempts
  get a hard link to it (6 us, no data block).  Before each link the run's copy is read back and
  compared with the script (a read allocates nothing: ~10 us): a job that changed its script in
  place does not pass the change on, the next attempt gets a fresh copy.  (One that rewrites it in
  the microseconds between that check and another attempt's start could; DECISIONS.md.)

Both are used from the worker's loop and its preparation threads, so their state is behind a lock.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading

SPARES_PER_RUN = 64  # empty attempt directories kept for reuse per run (a run's concurrency on one worker)
_SEQ = itertools.count()


def _own_name(kind: str) -> str:
    """``@<kind>-<pid>-<n>``: unique among the workers of a host sharing a workspace root, and never an
    attempt's name ('@' does not occur in a job id)."""
    return f"@{kind}-{os.getpid()}-{next(_SEQ)}"


class SparePool:
    """Empty attempt directories of each live run, ready to be renamed into place."""

    def __init__(self, runs_root: str):
        self.runs_root = runs_root
        self._spares: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def take(self, run_id: str, path: str) -> bool:
        """Rename a spare directory of the run to ``path``; False when there is none (make one)."""
        with self._lock:
            spares = self._spares.get(run_id)
            spare = spares.pop() if spares else None
        if spare is None:
            return False
        try:
            os.rename(spare, path)  # onto nothing, or onto an empty directory (replaced)
            return True
        except OSError:  # path holds something (left by an earlier worker process): the caller deals with it
            self._give(run_id, spare)
            return False

    def put(self, run_id: str, path: str) -> bool:
        """Keep the empty directory ``path`` as a spare of the run; False when the pool is full."""
        with self._lock:
            if len(self._spares.get(run_id, ())) >= SPARES_PER_RUN:
                return False
        spare = os.path.join(self.runs_root, run_id, "attempts", _own_name("spare"))
        try:
            os.rename(path, spare)
        except OSError:
            return False
        self._give(run_id, spare)
        return True

    def forget(self, run_id: str) -> None:
        """The run's directory is going: its spares with it."""
        with self._lock:
            self._spares.pop(run_id, None)

    def _give(self, run_id: str, spare: str) -> None:
        with self._lock:
            self._spares.setdefault(run_id, []).append(spare)


class ScriptCache:
    """One written copy of each inline script per run; attempts get hard links to it."""

    def __init__(self, runs_root: str):
        self.runs_root = runs_root
        self._copies: dict[tuple[str, str], str] = {}  # (run, digest) -> the run's copy
        self._lock = threading.Lock()

    def place(self, run_id: str, target: str, content: bytes) -> None:
        """Make ``target`` a file holding ``content``: a link to the run's copy when it is intact,
        else written (and kept as the run's copy for the next attempts)."""
        digest = hashlib.sha256(content).hexdigest()[:32]
        with self._lock:
            copy = self._copies.get((run_id, digest))
        if copy is not None and _holds(copy, content):
            try:
                os.link(copy, target)
                return
            except OSError:  # the copy went (the run's directory removed meanwhile) or links are not allowed
                pass
        with open(target, "wb") as f:
            f.write(content)
        self._keep(run_id, digest, target)

    def forget(self, run_id: str) -> None:
        with self._lock:
            for key in [k for k in self._copies if k[0] == run_id]:
                del self._copies[key]

    def _keep(self, run_id: str, digest: str, written: str) -> None:
        path = os.path.join(self.runs_root, run_id, _own_name("script"))
        try:
            os.link(written, path)
        except OSError:
            return
        with self._lock:
            self._copies[(run_id, digest)] = path


def _holds(path: str, content: bytes) -> bool:
    """Whether the file at ``path`` holds exactly ``content`` (read back, one read more than its size)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return os.read(fd, len(content) + 1) == content
    except OSError:
        return False
    finally:
        os.close(fd)
