"""TitanJob: a job as the client describes it (field names of the original Titan SDK)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from titan_zmq import defaults
from titan_zmq.errors import PipelineError


@dataclass
class TitanJob:
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
            path = Path(base_dir or ".") / self.filename
            if not path.is_file():
                raise PipelineError(f"job {self.job_id!r}: file {str(path)!r} not found")
            out["file"] = path.name
            out["script"] = path.read_bytes()
        return out
