"""TitanJob: a job as the client describes it (field names of the original Titan SDK)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from titan_zmq import defaults
from titan_zmq.errors import PipelineError


def inline_script(path: Path, job_id: str, where: str = "") -> tuple[str, bytes]:
    """The (file name, content) a job ships for a local script; PipelineError if it is not a file."""
    if not path.is_file():
        raise PipelineError(f"{where}{'file: ' if where else ''}{str(path)!r} not found (job {job_id!r})")
    return path.name, path.read_bytes()


@dataclass
class TitanJob:
    """A job as the client describes it, with the original Titan SDK's field names.

    ``filename`` is a local script, shipped inline with the job (``file`` + ``script`` on the wire);
    ``command`` is an argv to run instead; ``parents`` becomes ``depends_on``; ``job_type`` becomes
    ``type``. Everything else keeps its name.
    """

    job_id: str
    filename: str | None = None  # a local script; shipped inline with the job
    args: list[str] | str = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    priority: int = 0
    delay: float = 0.0
    affinity: bool = False
    requirement: str = defaults.CAPABILITY
    job_type: str = "run"
    port: int | None = None
    hitl_message: str | None = None
    max_wait_seconds: float | None = None
    retries: int = defaults.RETRIES
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] | str | None = None  # run this argv instead of a file

    def to_wire(self, base_dir: str | Path | None = None) -> dict[str, Any]:
        """The job as the broker takes it, with the script's content read from disk."""
        out: dict[str, Any] = {
            "id": self.job_id, "args": self.args, "depends_on": list(self.parents), "priority": self.priority,
            "delay": self.delay, "affinity": self.affinity, "requirement": self.requirement, "type": self.job_type,
            "retries": self.retries, "env": dict(self.env),
        }
        for key, value in (("port", self.port), ("hitl_message", self.hitl_message),
                           ("max_wait_seconds", self.max_wait_seconds), ("timeout", self.timeout),
                           ("command", self.command)):
            if value is not None:
                out[key] = value
        if self.filename is not None:
            out["file"], out["script"] = inline_script(Path(base_dir or ".") / self.filename, self.job_id)
        return out
