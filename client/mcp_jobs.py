"""Jobs as an MCP client sends them: a typed model (what the tools' JSON schema shows an agent) and its
conversion to :class:`~client.job.TitanJob`.

The model names the job schema's user fields (:class:`titan_zmq.jobspec.JobSpec`) as YAML does, plus
``script``, the script's content: an agent writes scripts, it does not have files on the workers' hosts.
Fields left out (None) take the schema's defaults, and every value is checked by the schema itself when
the job is converted to its wire form, so an error reads as it would for ``titan run``
(``jobs[1].priority: expected integer ...``). A unit test keeps the model's fields and the schema's user
fields the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from client.job import SDK_NAMES, TitanJob
from titan_zmq.errors import InvalidRequest

FIELD_TO_SDK = {field: sdk for sdk, field in SDK_NAMES.items()}  # schema field -> TitanJob argument
OWN = ("id", "script", "file")  # the model's fields TitanJob takes as its own constructor arguments


class McpJob(BaseModel):
    """One job of a DAG: a script (its content) or a command, with the job schema's options."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Unique in the run: letters, digits, '_', '-', '.'.")
    script: str | None = Field(None, description=(
        "The script's content. It is shipped with the job, so it runs on any worker; `file` names it."))
    file: str | None = Field(None, description=(
        "With `script`: the name it runs under; the suffix picks the interpreter (.py Python, .sh bash, "
        "anything else is executed and needs a #! line). Without `script`: a script file on the MCP "
        "server's host, read there and shipped with the job."))
    command: list[str] | str | None = Field(None, description=(
        "An argv to run instead of a script (a string is split like a shell would)."))
    args: list[str] | str | None = Field(None, description="Arguments for the script or command.")
    env: dict[str, str] | None = Field(None, description="Extra environment variables.")
    depends_on: list[str] | str | None = Field(
        None, validation_alias=AliasChoices("depends_on", "parents"),
        description="Ids of the jobs that must complete first (also accepted as `parents`).")
    type: str | None = Field(None, description=(
        "run (default) or service; `gate` on brokers with approval gates (a node that waits for a human)."))
    requirement: str | None = Field(None, description="Capability tag a worker must have (default GENERAL).")
    priority: int | None = Field(None, description="Higher runs first (default 0).")
    delay: float | None = Field(None, description="Seconds to wait once the parents are done.")
    affinity: bool | None = Field(None, description="Run on the worker that ran the first parent.")
    retries: int | None = Field(None, description="Retries after a failed attempt (default 3).")
    timeout: float | None = Field(None, description="Seconds before the attempt is killed.")
    port: int | None = Field(None, description=(
        "Service: the port it listens on (given as $PORT); 0 or absent: the worker picks a free one."))
    restart: str | None = Field(None, description="Service: always, on-failure (default) or never.")
    max_restarts: int | None = Field(None, description=(
        "Service: more exits than this within restart_window and it ends FAILED (default 5)."))
    restart_window: float | None = Field(None, description="Service: seconds exits are counted over (default 60).")
    health: str | dict[str, Any] | None = Field(None, description=(
        "Service: READY when this passes: tcp (default), none, {http: /path} (2xx), {command: [argv]} (exit 0)."))
    stop_grace: float | None = Field(None, description="Service: seconds between SIGTERM and SIGKILL (default 10).")
    hitl_message: str | None = Field(None, description=(
        "Approval gate: a human must approve this question before the job's children run."))
    max_wait_seconds: float | None = Field(None, description="Approval gate: seconds to wait for the answer.")


def to_titan_job(job: McpJob, base_dir: str | Path | None = None) -> TitanJob:
    """The TitanJob for a model job: ``script`` is shipped as given; a ``file`` without ``script`` is read
    (relative to ``base_dir``) and shipped inline, as ``titan run`` does."""
    fields = {FIELD_TO_SDK.get(name, name): value for name, value in job.model_dump(exclude=set(OWN)).items()
              if value is not None}
    if job.script is not None:
        if not job.file:
            raise InvalidRequest(f"job {job.id!r}: a script needs `file`, the name it runs under "
                                 "(its suffix picks the interpreter: .py, .sh, else run directly)")
        return TitanJob(job.id, filename=job.file, script=job.script, **fields)
    filename = None if job.file is None else str(Path(base_dir or ".") / job.file)
    return TitanJob(job.id, filename=filename, **fields)


def to_titan_jobs(jobs: list[McpJob], base_dir: str | Path | None = None) -> list[TitanJob]:
    """TitanJobs for a DAG's model jobs, in order."""
    return [to_titan_job(job, base_dir) for job in jobs]


def from_wire(wire: dict[str, Any]) -> TitanJob:
    """The TitanJob for a job in wire form with its script inline (a pipeline's ``jobs`` outside project
    mode), so a pipeline read from text goes through the same client call as any DAG."""
    rest = dict(wire)
    job_id, filename, script = rest.pop("id"), rest.pop("file", None), rest.pop("script", None)
    if filename is not None and script is None:
        raise InvalidRequest(f"job {job_id!r}: its file is not shipped inline (project mode needs a YAML path)")
    return TitanJob(job_id, filename=filename, script=script,
                    **{FIELD_TO_SDK.get(name, name): value for name, value in rest.items()})
