"""Where attempts run on a worker host, and how a job's script or project gets there.

Layout under the workspace root::

    blobs/<sha256>.tar.gz                 project archives received from the broker
    runs/<run_id>/shared/                 TITAN_SHARED_DIR: the run's data bus on this host
    runs/<run_id>/project/                the run's project archive, extracted once
    runs/<run_id>/attempts/<job_id>@<attempt>/  one workspace per attempt (the job's cwd)
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from titan_zmq.errors import InvalidRequest


class Workspace:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self._shared: dict[str, Path] = {}  # run_id -> its shared directory, known to exist
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "runs").mkdir(parents=True, exist_ok=True)

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def shared_dir(self, run_id: str) -> Path:
        path = self._shared.get(run_id)
        if path is None:
            path = self._shared[run_id] = self.root / "runs" / run_id / "shared"
            path.mkdir(parents=True, exist_ok=True)
        return path

    def attempt_dir(self, run_id: str, job_id: str, attempt: int) -> Path:
        """``runs/<run>/attempts/<job>@<attempt>`` ('@' never occurs in a job id): one mkdir per attempt."""
        path = os.path.join(self.root, "runs", run_id, "attempts", f"{job_id}@{attempt}")
        try:
            os.mkdir(path)
        except FileNotFoundError:  # the run's first attempt on this host
            os.makedirs(path)
        except FileExistsError:  # left by an earlier worker process: start clean
            shutil.rmtree(path)
            os.mkdir(path)
        return Path(path)

    def has_blob(self, blob_id: str) -> bool:
        return (self.root / "blobs" / f"{blob_id}.tar.gz").exists()

    def save_blob(self, blob_id: str, data: bytes) -> None:
        path = self.root / "blobs" / f"{blob_id}.tar.gz"
        tmp = path.with_name(f"{path.name}.part-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def project_dir(self, run_id: str, blob_id: str) -> Path:
        """The run's project, extracted on first use (path traversal refused)."""
        target = self.run_dir(run_id) / "project"
        if target.exists():
            return target
        blob = self.root / "blobs" / f"{blob_id}.tar.gz"
        if not blob.exists():
            raise InvalidRequest(f"project archive {blob_id[:12]} is not on this worker")
        tmp = target.with_name(f"project.part-{os.getpid()}")  # workers on one host may share the root
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        extract_safely(blob.read_bytes(), tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another worker of this host extracted it first
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def prepare(self, run_id: str, job_id: str, attempt: int, spec: dict[str, Any]) -> tuple[list[str], Path]:
        """The argv and cwd of an attempt, with its script written or its project extracted."""
        cwd = self.attempt_dir(run_id, job_id, attempt)
        args = [str(a) for a in spec.get("args", [])]
        if spec.get("command"):
            return [str(c) for c in spec["command"]] + args, cwd
        name = spec.get("file")
        if not name:
            raise InvalidRequest(f"job {job_id!r} has neither a file nor a command")
        if spec.get("project"):
            base = self.project_dir(run_id, spec["project"])
            script = (base / name).resolve()
            if not script.is_relative_to(base.resolve()):
                raise InvalidRequest(f"file {name!r} is outside the project")
            if not script.is_file():
                raise InvalidRequest(f"file {name!r} is not in the project archive")
        elif spec.get("script") is not None:
            script = cwd / PurePosixPath(name).name
            script.write_bytes(spec["script"])
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


def extract_safely(data: bytes, target: Path) -> None:
    """Extract a tar(.gz) archive, refusing absolute paths, '..', links out of it and devices."""
    root = target.resolve()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        members = tar.getmembers()
        for m in members:
            path = PurePosixPath(m.name)
            if path.is_absolute() or ".." in path.parts:
                raise InvalidRequest(f"project archive: unsafe path {m.name!r}")
            if not (m.isfile() or m.isdir()):
                raise InvalidRequest(f"project archive: {m.name!r} is not a regular file or directory")
            if not (root / path).resolve().is_relative_to(root):
                raise InvalidRequest(f"project archive: {m.name!r} escapes the project directory")
        tar.extractall(root, members=members, filter="data")
