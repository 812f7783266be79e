"""Where attempts run on a worker host, and how a job's script or project gets there.

Layout under the workspace root::

    blobs/<sha256>.tar.gz                 project archives received from the broker
    runs/<run_id>/shared/                 TITAN_SHARED_DIR: the run's data bus on this host
    runs/<run_id>/project/                the run's project archive, extracted once
    runs/<run_id>/attempts/<job_id>@<attempt>/  one workspace per attempt (the job's cwd)
    runs/<run_id>/attempts/@spare-<w>-<n>/  an empty workspace kept for the run's next attempt
    runs/<run_id>/@script-<w>-<n>          the run's copy of an inline script (attempts get links)
    failed/<run_id>/<job_id>@<attempt>/   a failed attempt's workspace, kept --keep-failed hours

An attempt's workspace goes when the attempt ends (a failed one moves to ``failed/`` first, if
failed ones are kept; an emptied one is kept as a spare for the run's next attempt, see
:mod:`.reuse`); a run's directory goes when the broker says the run ended.  Everything here
that takes time in proportion to user data is called from the worker's off-loop threads
(:mod:`.offload`), never from its loop; the methods are safe to call from several threads.
Project archives are checked against :class:`Limits` while they are read, before anything big is
written: a refusal raises :class:`~titan_zmq.errors.JobRefused` (retrying cannot help).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from titan_zmq import defaults
from titan_zmq.errors import InvalidRequest, JobRefused
from titan_zmq.worker.reuse import ScriptCache, SparePool

LOCK_STRIPES = 16  # project extractions of one run are serialised by one of these locks
QUICK_SCRIPT_BYTES = 256 * 1024  # an inline script up to this size is written by the loop itself
QUICK_CLEAN_ENTRIES = 4  # an attempt directory with at most this many plain files is emptied by the loop itself


@dataclass(frozen=True)
class Limits:
    """How big a project may be, packed and unpacked."""

    archive: int = defaults.MAX_ARCHIVE_BYTES
    extracted: int = defaults.MAX_EXTRACTED_BYTES
    ratio: float = defaults.MAX_UNPACK_RATIO  # unpacked / packed; 0 = no check
    ratio_free: int = defaults.UNPACK_RATIO_FREE_BYTES  # so small, very compressible projects pass

    def unpacked_cap(self, archive_size: int) -> int:
        if self.ratio <= 0:
            return self.extracted
        return min(self.extracted, max(int(self.ratio * archive_size), self.ratio_free))


class Workspace:
    def __init__(self, root: str | Path, limits: Limits | None = None):
        self.root = Path(root).resolve()
        self.limits = limits or Limits()
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._shared: set[str] = set()  # runs whose shared directory is known to exist
        self.spares = SparePool(str(self.root / "runs"))
        self.scripts = ScriptCache(str(self.root / "runs"))
        for sub in ("blobs", "runs", "failed"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def shared_dir(self, run_id: str) -> Path:
        """TITAN_SHARED_DIR (made by :meth:`prepare`)."""
        return self.root / "runs" / run_id / "shared"

    def attempt_dir(self, run_id: str, job_id: str, attempt: int) -> Path:
        """``runs/<run>/attempts/<job>@<attempt>`` ('@' never occurs in a job id): a spare of the run
        renamed into place, or one mkdir."""
        path = self._attempt_path(run_id, job_id, attempt)
        if self.spares.take(run_id, path):
            return Path(path)
        try:
            os.mkdir(path)
        except FileNotFoundError:  # the run's first attempt on this host
            os.makedirs(path)
        except FileExistsError:  # left by an earlier worker process: start clean (it goes with the run)
            os.replace(path, f"{path}.old-{_unique()}")
            os.mkdir(path)
        return Path(path)

    def is_quick(self, run_id: str, spec: dict[str, Any], shipped: bool) -> bool:
        """Whether preparing an attempt costs the same whatever the user sent (no archive to save or
        unpack, a small script or none): then the worker's loop does it itself, saving two thread hops."""
        script = spec.get("script")
        if shipped or (script is not None and len(script) > QUICK_SCRIPT_BYTES):
            return False
        return not spec.get("project") or (self.run_dir(run_id) / "project").exists()

    def has_blob(self, blob_id: str) -> bool:
        return (self.root / "blobs" / f"{blob_id}.tar.gz").exists()

    def save_blob(self, blob_id: str, data: bytes) -> None:
        if len(data) > self.limits.archive:
            raise JobRefused(f"project archive of {len(data)} bytes is over this worker's limit of "
                             f"{self.limits.archive} (--max-archive-bytes)")
        path = self.root / "blobs" / f"{blob_id}.tar.gz"
        tmp = path.with_name(f"{path.name}.part-{_unique()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def project_dir(self, run_id: str, blob_id: str) -> Path:
        """The run's project, extracted on first use (unsafe or oversized archives refused)."""
        target = self.run_dir(run_id) / "project"
        with self._locks[hash(run_id) % LOCK_STRIPES]:  # the run's other attempts wait for this one's copy
            if target.exists():
                return target
            blob = self.root / "blobs" / f"{blob_id}.tar.gz"
            if not blob.exists():
                raise InvalidRequest(f"project archive {blob_id[:12]} is not on this worker")
            tmp = target.with_name(f"project.part-{_unique()}")  # workers on one host may share the root
            tmp.mkdir(parents=True)
            try:
                with open(blob, "rb") as f:
                    extract_safely(f, tmp, self.limits)
                os.replace(tmp, target)
            except OSError:
                if not target.exists():
                    raise
                # another worker of this host extracted it first
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    # ---- clean-up (off the loop) ---------------------------------------------------------------

    def _attempt_path(self, run_id: str, job_id: str, attempt: int) -> str:
        return os.path.join(self.root, "runs", run_id, "attempts", f"{job_id}@{attempt}")

    def release_attempt(self, run_id: str, job_id: str, attempt: int, reuse: bool = True) -> bool:
        """Empty a successful attempt's workspace if the job left at most :data:`QUICK_CLEAN_ENTRIES`
        plain files in it (its own script, a small output) and keep it as a spare for the run's next
        attempt (with ``reuse``: no process of the job can still write there) or remove it: a bounded
        number of system calls whatever the job did, cheap enough for the worker's loop. False when
        there is a tree to walk: the caller hands it off."""
        path = self._attempt_path(run_id, job_id, attempt)
        try:
            with os.scandir(path) as it:
                names: list[str] = []
                for entry in it:
                    if len(names) == QUICK_CLEAN_ENTRIES or entry.is_dir(follow_symlinks=False):
                        return False
                    names.append(entry.name)
            for name in names:
                os.unlink(os.path.join(path, name))
            if not (reuse and self.spares.put(run_id, path)):
                os.rmdir(path)
        except FileNotFoundError:  # it never started, or it went with its run
            return True
        except OSError:  # it changed under us (a process the job left behind still writes): walk it off-loop
            return False
        return True

    def finish_attempt(self, run_id: str, job_id: str, attempt: int, failed: bool, keep_failed: float) -> None:
        """Remove an attempt's workspace, or move a failed one to ``failed/`` when they are kept."""
        path = Path(self._attempt_path(run_id, job_id, attempt))
        if failed and keep_failed > 0:
            dest = self.root / "failed" / run_id / path.name
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.exists():
                    shutil.rmtree(dest)
                os.replace(path, dest)
                os.utime(dest)  # kept from now on
                return
            except FileNotFoundError:  # nothing to keep (it never started, or the run dir went)
                return
        try:
            os.rmdir(path)  # most attempts leave their directory empty: one call, not a tree walk
        except OSError:
            shutil.rmtree(path, ignore_errors=True)

    def remove_run(self, run_id: str) -> None:
        """The run ended: its shared directory, project copy and any workspace left go."""
        self._shared.discard(run_id)
        self.spares.forget(run_id)
        self.scripts.forget(run_id)
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    def sweep_failed(self, keep_failed: float, now: float | None = None) -> int:
        """Remove kept failed workspaces older than ``keep_failed`` seconds; returns how many went."""
        cutoff = (now if now is not None else time.time()) - keep_failed
        removed = 0
        for run in _subdirs(self.root / "failed"):
            left = 0
            for attempt in _subdirs(run):
                try:
                    old = attempt.stat().st_mtime < cutoff
                except FileNotFoundError:  # another worker of this host removed it
                    continue
                if old:
                    shutil.rmtree(attempt, ignore_errors=True)
                    removed += 1
                else:
                    left += 1
            if not left:
                try:
                    run.rmdir()
                except OSError:
                    pass
        return removed

    def prepare(self, run_id: str, job_id: str, attempt: int, spec: dict[str, Any]) -> tuple[list[str], Path]:
        """The argv and cwd of an attempt, with its script written or its project extracted."""
        if run_id not in self._shared:
            self.shared_dir(run_id).mkdir(parents=True, exist_ok=True)
            self._shared.add(run_id)
        cwd = self.attempt_dir(run_id, job_id, attempt)
        args = [str(a) for a in spec.get("args", [])]
        if spec.get("command"):
            return [str(c) for c in spec["command"]] + args, cwd
        name = spec.get("file")
        if not name:
            raise JobRefused(f"job {job_id!r} has neither a file nor a command")
        if spec.get("project"):
            base = self.project_dir(run_id, spec["project"])
            script = (base / name).resolve()
            if not script.is_relative_to(base.resolve()):
                raise JobRefused(f"file {name!r} is outside the project")
            if not script.is_file():
                raise JobRefused(f"file {name!r} is not in the project archive")
        elif spec.get("script") is not None:
            script = cwd / PurePosixPath(name).name
            self.scripts.place(run_id, str(script), spec["script"])
        else:
            script = Path(name)  # a path on the worker host
        return interpreter(script) + args, cwd


def interpreter(script: Path) -> list[str]:
    """`.py` runs with the worker's own Python, `.sh` with bash, anything else directly."""
    if script.suffix == ".py":
        return [sys.executable, str(script)]
    if script.suffix == ".sh":
        return ["bash", str(script)]
    if script.exists():
        script.chmod(script.stat().st_mode | 0o100)
    return [str(script)]


def extract_safely(data: bytes | IO[bytes], target: Path, limits: Limits | None = None) -> None:
    """Extract a tar(.gz) archive as a stream, refusing absolute paths, '..', links out of it, devices,
    and more unpacked bytes than ``limits`` allow (checked from each member's header before its data
    is written, so a zip bomb costs no disk)."""
    limits = limits or Limits()
    fileobj = io.BytesIO(data) if isinstance(data, bytes) else data
    size = _size(fileobj)
    if size > limits.archive:
        raise JobRefused(f"project archive of {size} bytes is over this worker's limit of {limits.archive}")
    cap = limits.unpacked_cap(size)
    root = target.resolve()
    total = 0
    made: set[str] = set()  # top-level entries written so far: removed again if the archive is refused
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for m in tar:
                _check_member(m, root)
                total += max(m.size, 0)
                if total > cap:
                    raise JobRefused(
                        f"project archive unpacks to more than {cap} bytes ({size} packed): refused (limits: "
                        f"--max-extracted-bytes {limits.extracted}, --max-unpack-ratio {limits.ratio:g})")
                made.add(PurePosixPath(m.name).parts[0])
                tar.extract(m, root, filter="data")
    except BaseException:
        for name in made:
            _remove(root / name)
        raise


def _check_member(m: tarfile.TarInfo, root: Path) -> None:
    path = PurePosixPath(m.name)
    if path.is_absolute() or ".." in path.parts:
        raise JobRefused(f"project archive: unsafe path {m.name!r}")
    if not (m.isfile() or m.isdir()):
        raise JobRefused(f"project archive: {m.name!r} is not a regular file or directory")
    if not (root / path).resolve().is_relative_to(root):
        raise JobRefused(f"project archive: {m.name!r} escapes the project directory")


def _size(f: IO[bytes]) -> int:
    here = f.tell()
    end = f.seek(0, os.SEEK_END)
    f.seek(here)
    return end - here


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []


def _unique() -> str:
    """A temporary name no other thread or worker of this host uses."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"
