"""YAML pipelines: load, check every field, and turn them into a submission.

A pipeline is a map: ``name`` (required), ``project`` (true ships the pipeline's folder as an archive),
``agent_run_id`` (groups several runs), ``schedule`` (a cron block for `titan schedule add`, see
:mod:`titan_zmq.cron`; `titan run` ignores it) and ``jobs``, a list of job maps. A job's keys, their types, checks
and defaults are those of the job schema, :class:`titan_zmq.jobspec.JobSpec` (its user fields; README.md's
YAML reference documents each one); ``file`` is relative to the YAML file, and is shipped inline or, in
project mode, as a path in the archive.

The file must be UTF-8; it is parsed with libyaml's C loader when PyYAML has it (a 20,000-job pipeline in
about 2 s instead of 6), and a key given twice in one map is an error naming both lines (YAML would keep
the last one silently).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

from client.job import inline_script
from titan_zmq import cron, defaults
from titan_zmq.errors import InvalidRequest, PipelineError
from titan_zmq.jobspec import JobSpec, check_job_count, check_name, parse_job, schema, validate_dag

try:
    from yaml import CSafeLoader as SafeLoader  # libyaml: several times faster on big pipelines
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader

TOP_FIELDS = {"name": str, "project": bool, "agent_run_id": str, "jobs": list, "schedule": dict}
MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictLoader(SafeLoader):  # type: ignore[misc]  # PyYAML has no type hints
    """The safe loader (libyaml's when installed) that refuses a key given twice in one map."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue  # keys merged in with << may be overridden: that is what merging is for
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: the base class says so
            if seen is not key_node:
                raise ConstructorError("while reading a map", node.start_mark,
                                       f"duplicate key {key!r} (first given on line {seen.start_mark.line + 1})",
                                       key_node.start_mark)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep)
        return mapping
SKIP_DIRS = {".git", "__pycache__", ".venv", "venv", "node_modules", defaults.DATA_DIR, defaults.WORKSPACE}


@dataclass
class Pipeline:
    """A checked pipeline, ready to submit (``submission()`` is the SUBMIT_DAG body)."""

    name: str
    jobs: list[dict[str, Any]]  # wire form, scripts inline unless project mode
    agent_run_id: str | None = None
    project: bytes | None = None  # tar.gz of the pipeline folder in project mode
    path: Path | None = None
    schedule: dict[str, Any] | None = None  # the checked `schedule:` block (`titan schedule add`), if any

    def submission(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "jobs": self.jobs}
        if self.agent_run_id:
            body["agent_run_id"] = self.agent_run_id
        if self.project is not None:
            body["project"] = {"data": self.project}
        return body


def load(path: str | Path, spec: type[JobSpec] = JobSpec) -> Pipeline:
    """Read and check a YAML pipeline; PipelineError names the file, and the line or field at fault."""
    path = Path(path)
    doc = read_yaml(path)
    try:
        return parse(doc, path.parent, path, spec)
    except InvalidRequest as exc:
        raise PipelineError(f"{path}: {exc}") from None


def read_yaml(path: Path) -> Any:
    """The document in a UTF-8 YAML file; PipelineError (with the line when there is one) otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PipelineError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:  # the pure-Python loader (no libyaml) recurses per level of nesting
        raise PipelineError(f"{path}: invalid YAML: nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise PipelineError(f"{path}: invalid YAML: {exc}") from None


def parse(doc: Any, base: Path, path: Path | None = None, spec: type[JobSpec] = JobSpec) -> Pipeline:
    """Check a loaded pipeline document against ``spec``'s schema; scripts are read relative to ``base``."""
    raw_jobs = _check_top(doc)
    project = doc.get("project", False)
    user_fields = schema(spec).user
    specs = []
    for i, raw in enumerate(raw_jobs):
        where = f"jobs[{i}]"
        for key in raw if isinstance(raw, dict) else ():
            if key not in user_fields:
                raise PipelineError(f"{where}.{key}: unknown field")
        specs.append(parse_job(raw, where, spec))
    validate_dag(specs)
    jobs = []
    for i, job in enumerate(specs):
        wire = job.to_wire()
        if job.file is not None:
            wire.update(_ship_file(job, job.file, f"jobs[{i}].file", base, project))
        jobs.append(wire)
    archive = None
    if project:
        archive = pack_folder(base)
        blob_id = hashlib.sha256(archive).hexdigest()
        for wire in jobs:
            if "file" in wire:
                wire["project"] = blob_id
    schedule = cron.parse_options(doc["schedule"]).to_wire() if "schedule" in doc else None
    return Pipeline(name=doc["name"], jobs=jobs, agent_run_id=doc.get("agent_run_id"), project=archive, path=path,
                    schedule=schedule)


def _check_top(doc: Any) -> list[Any]:
    """Check the top-level map of a pipeline; return its jobs."""
    if not isinstance(doc, dict):
        raise PipelineError("expected a map with name and jobs at the top")
    for key, value in doc.items():
        if key not in TOP_FIELDS:
            raise PipelineError(f"{key}: unknown field (known: {', '.join(TOP_FIELDS)})")
        if not isinstance(value, TOP_FIELDS[key]):
            raise PipelineError(f"{key}: expected {TOP_FIELDS[key].__name__}, got {type(value).__name__}")
    if "name" not in doc or "jobs" not in doc:
        raise PipelineError("name and jobs are required")
    if not doc["jobs"]:
        raise PipelineError("jobs: expected at least one job")
    check_name(doc["name"], "name")
    check_name(doc.get("agent_run_id"), "agent_run_id")
    check_job_count(len(doc["jobs"]))
    jobs: list[Any] = doc["jobs"]
    return jobs


def _ship_file(job: JobSpec, file: str, where: str, base: Path, project: bool) -> dict[str, Any]:
    """The wire keys for a job's script: its content inline, or (project mode) its path in the archive."""
    script = (base / file).resolve()
    if not script.is_file():
        raise PipelineError(f"{where}: {file!r} not found (job {job.id!r})")
    if not project:
        name, content = inline_script(script, job.id, where.removesuffix("file"))
        return {"file": name, "script": content}
    if not script.is_relative_to(base.resolve()):
        raise PipelineError(f"{where}: {file!r} is outside the project folder")
    rel = script.relative_to(base.resolve())
    if _skipped(rel):
        raise PipelineError(f"{where}: {file!r} is in a folder project mode does not ship"
                            f" (hidden or {', '.join(sorted(SKIP_DIRS))})")
    return {"file": rel.as_posix()}


def _skipped(rel: Path) -> bool:
    """Whether project mode leaves this path out of the archive (hidden files, caches, venvs)."""
    return any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts)


def pack_folder(base: Path) -> bytes:
    """A deterministic tar.gz of a folder (sorted, no times, no owners), hidden and cache dirs left out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(base)
            if _skipped(rel):
                continue
            if not (path.is_file() or path.is_dir()) or path.is_symlink():
                continue
            info = tar.gettarinfo(str(path), arcname=rel.as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_file():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    data = gzip.compress(buf.getvalue(), compresslevel=6, mtime=0)
    if len(data) > defaults.MAX_BODY_BYTES - 1024 * 1024:
        raise PipelineError(f"project folder {base} packs to {len(data)} bytes, over the frame cap")
    return data
