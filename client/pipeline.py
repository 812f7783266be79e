"""YAML pipelines: load, check every field, and turn them into a submission.

Schema (the original Titan's, plus retries, timeout, env, command)::

    name: etl                 # required
    project: false            # true ships the pipeline's folder as an archive
    agent_run_id: optional    # groups several runs
    jobs:
      - id: extract           # required; letters, digits, _ - .
        type: run             # run | service
        file: extract.py      # relative to the YAML file (or command: [...])
        args: "--n 3 'a b'"   # a string is split like a shell would; or a list
        depends_on: [other]
        requirement: GENERAL  # capability tag (GPU, HIGH_MEM, any tag)
        priority: 0           # higher first, FIFO among equals
        delay: 0              # seconds, counted from the moment the parents are done
        affinity: false       # run on the worker that ran the first parent
        retries: 3
        timeout: 60           # seconds; the process group is killed after it
        env: {KEY: value}
        port / hitl_message / max_wait_seconds
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

from client.job import inline_script
from titan_zmq import defaults
from titan_zmq.errors import InvalidRequest, PipelineError
from titan_zmq.jobspec import FIELD_NAMES, parse_job, validate_dag

TOP_FIELDS = {"name": str, "project": bool, "agent_run_id": str, "jobs": list}
YAML_JOB_FIELDS = FIELD_NAMES - {"script", "project"}
SKIP_DIRS = {".git", "__pycache__", ".venv", "venv", "node_modules", defaults.DATA_DIR, defaults.WORKSPACE}


@dataclass
class Pipeline:
    """A checked pipeline, ready to submit (``submission()`` is the SUBMIT_DAG body)."""

    name: str
    jobs: list[dict[str, Any]]  # wire form, scripts inline unless project mode
    agent_run_id: str | None = None
    project: bytes | None = None  # tar.gz of the pipeline folder in project mode
    path: Path | None = None

    def submission(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "jobs": self.jobs}
        if self.agent_run_id:
            body["agent_run_id"] = self.agent_run_id
        if self.project is not None:
            body["project"] = {"data": self.project}
        return body


def load(path: str | Path) -> Pipeline:
    """Read and check a YAML pipeline; PipelineError names the file, and the line or field at fault."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PipelineError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    try:
        return parse(doc, path.parent, path)
    except InvalidRequest as exc:
        raise PipelineError(f"{path}: {exc}") from None


def parse(doc: Any, base: Path, path: Path | None = None) -> Pipeline:
    """Check a loaded pipeline document; scripts are read relative to ``base``."""
    if not isinstance(doc, dict):
        raise PipelineError("expected a map with name and jobs at the top")
    for key, value in doc.items():
        if key not in TOP_FIELDS:
            raise PipelineError(f"{key}: unknown field (known: {', '.join(TOP_FIELDS)})")
        if not isinstance(value, TOP_FIELDS[key]):
            raise PipelineError(f"{key}: expected {TOP_FIELDS[key].__name__}, got {type(value).__name__}")
    if "name" not in doc or "jobs" not in doc:
        raise PipelineError("name and jobs are required")
    raw_jobs = doc["jobs"]
    if not raw_jobs:
        raise PipelineError("jobs: expected at least one job")
    project = doc.get("project", False)
    specs = []
    for i, raw in enumerate(raw_jobs):
        where = f"jobs[{i}]"
        if isinstance(raw, dict):
            for key in raw:
                if key not in YAML_JOB_FIELDS:
                    raise PipelineError(f"{where}.{key}: unknown field")
        specs.append(parse_job(raw, where))
    validate_dag(specs)
    jobs = []
    for i, spec in enumerate(specs):
        job = spec.to_wire()
        if spec.file is not None:
            script = (base / spec.file).resolve()
            if not script.is_file():
                raise PipelineError(f"jobs[{i}].file: {spec.file!r} not found (job {spec.id!r})")
            if project:
                if not script.is_relative_to(base.resolve()):
                    raise PipelineError(f"jobs[{i}].file: {spec.file!r} is outside the project folder")
                rel = script.relative_to(base.resolve())
                if _skipped(rel):
                    raise PipelineError(f"jobs[{i}].file: {spec.file!r} is in a folder project mode does not ship"
                                        f" (hidden or {', '.join(sorted(SKIP_DIRS))})")
                job["file"] = rel.as_posix()
            else:
                job["file"], job["script"] = inline_script(script, spec.id, f"jobs[{i}].")
        jobs.append(job)
    archive = None
    if project:
        archive = pack_folder(base)
        blob_id = hashlib.sha256(archive).hexdigest()
        for job in jobs:
            if "file" in job:
                job["project"] = blob_id
    return Pipeline(name=doc["name"], jobs=jobs, agent_run_id=doc.get("agent_run_id"), project=archive, path=path)


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
