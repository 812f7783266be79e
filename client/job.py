"""TitanJob: a job as the client describes it (field names of the original Titan SDK)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from titan_zmq.errors import InvalidRequest, PipelineError
from titan_zmq.jobspec import JobSpec, check_job_count, parse_job, schema

SDK_NAMES = {"parents": "depends_on", "job_type": "type"}  # TitanJob argument -> schema field
# job_id (-> id), filename (-> file + script, read from disk) and script (the content itself, instead of
# reading filename) are TitanJob's own constructor arguments
_OWN = ("job_id", "filename", "script", "fields")


def inline_script(path: Path, job_id: str, where: str = "") -> tuple[str, bytes]:
    """The (file name, content) a job ships for a local script; PipelineError if it is not a file."""
    if not path.is_file():
        raise PipelineError(f"{where}{'file: ' if where else ''}{str(path)!r} not found (job {job_id!r})")
    return path.name, path.read_bytes()


_ARGUMENTS: dict[type[JobSpec], dict[str, str]] = {}


def arguments(spec: type[JobSpec] = JobSpec) -> dict[str, str]:
    """TitanJob's keyword arguments for a spec class, each mapped to its schema field."""
    found = _ARGUMENTS.get(spec)
    if found is None:
        sdk_name = {name: sdk for sdk, name in SDK_NAMES.items()}
        user = schema(spec).user - {"id", "file"}
        found = _ARGUMENTS[spec] = {sdk_name.get(n, n): n for n in schema(spec).names if n in user}
    return found


class TitanJob:
    """A job as the client describes it, with the original Titan SDK's field names.

    ``filename`` is a local script, shipped inline with the job (``file`` + ``script`` on the wire); with
    ``script`` (the script's content, text or bytes) nothing is read from disk and ``filename`` is only the
    name it runs under (its suffix picks the interpreter: ``.py``, ``.sh``, else run directly).
    ``parents`` becomes ``depends_on``; ``job_type`` becomes ``type``. Every other user field of the job
    schema (:class:`titan_zmq.jobspec.JobSpec`) is a keyword argument and an attribute under its own name
    (``command``, ``args``, ``priority``, ``retries``, ...), with the schema's default. ``to_wire`` checks
    the job with the broker's own :func:`~titan_zmq.jobspec.parse_job`, so a bad job fails before it is sent.
    """

    spec: ClassVar[type[JobSpec]] = JobSpec  # the schema the job follows (a test subclass adds a field)
    job_id: str
    filename: str | None  # a local script; shipped inline with the job
    script: bytes | None  # the script's content, given instead of a file to read (filename names it)
    fields: dict[str, Any]  # every other argument, by its TitanJob name

    def __init__(self, job_id: str, filename: str | None = None, script: bytes | str | None = None,
                 **fields: Any) -> None:
        self.job_id = job_id
        self.filename = filename
        self.script = script.encode() if isinstance(script, str) else script
        defaults = schema(self.spec).defaults()
        self.fields = {arg: defaults[name] for arg, name in arguments(self.spec).items()}
        for arg, value in fields.items():
            setattr(self, arg, value)

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__.get("fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN:
            object.__setattr__(self, name, value)
        elif name in self.fields:
            self.fields[name] = value
        else:
            raise InvalidRequest(f"job.{name}: unknown field")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TitanJob):
            return NotImplemented
        mine = (self.spec, self.job_id, self.filename, self.script)
        theirs = (other.spec, other.job_id, other.filename, other.script)
        return mine == theirs and self.fields == other.fields

    def __repr__(self) -> str:
        own = {"filename": self.filename} | ({"script": self.script} if self.script is not None else {})
        given = "".join(f", {k}={v!r}" for k, v in {**own, **self.fields}.items())
        return f"{type(self).__name__}({self.job_id!r}{given})"

    def to_wire(self, base_dir: str | Path | None = None, where: str = "job") -> dict[str, Any]:
        """The job as the broker takes it, checked, with the script's content (read from disk unless given).

        InvalidRequest names the bad field as the broker would (``where`` is ``job`` or ``jobs[i]``).
        """
        names = arguments(self.spec)
        raw = {"id": self.job_id} | {names[arg]: v for arg, v in self.fields.items() if v is not None}
        if self.script is not None:
            if not self.filename:
                raise InvalidRequest(f"{where} ({self.job_id}): a script needs a filename to run under "
                                     "(its suffix picks the interpreter: .py, .sh, else run directly)")
            raw["file"], raw["script"] = self.filename, self.script
        elif self.filename is not None:
            raw["file"], raw["script"] = inline_script(Path(base_dir or ".") / self.filename, self.job_id)
        return parse_job(raw, where, self.spec).to_wire()


def wire_jobs(jobs: list[TitanJob], base_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The ``jobs`` of a submission, each checked; errors name ``jobs[i]`` as the broker's would."""
    check_job_count(len(jobs))
    return [job.to_wire(base_dir, f"jobs[{i}]") for i, job in enumerate(jobs)]
