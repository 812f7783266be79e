"""Job specifications and whole-DAG validation, shared by the YAML loader, the client and the broker.

A job travels as a msgpack map; :func:`parse_job` checks every field's type and names the
field in its error (``jobs[2].priority: expected integer``), and :func:`validate_dag` checks
the submission as a whole (duplicate ids, unknown parents, cycles) so that nothing of a bad
submission ever runs.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, fields
from typing import Any

from titan_zmq import defaults
from titan_zmq.errors import InvalidRequest

JOB_TYPES = ("run", "service")
ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # safe in paths and PUB topics


@dataclass(frozen=True)
class JobSpec:
    id: str
    file: str | None = None  # script name (for display and to pick the interpreter)
    script: bytes | None = None  # inline script content shipped with the job
    project: str | None = None  # id of a project archive (project mode); file is a path inside it
    command: list[str] | None = None  # an argv to run directly instead of a file
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    type: str = "run"
    requirement: str = defaults.CAPABILITY
    priority: int = 0
    delay: float = 0.0
    depends_on: list[str] = field(default_factory=list)
    affinity: bool = False
    retries: int = defaults.RETRIES
    timeout: float | None = None
    port: int | None = None
    hitl_message: str | None = None
    max_wait_seconds: float | None = None

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-ready map of the spec (fields that are None left out)."""
        return {name: value for name in WIRE_FIELDS if (value := getattr(self, name)) is not None}


WIRE_FIELDS = tuple(f.name for f in fields(JobSpec))


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _str_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


# field -> (check, expected-type phrase)
_FIELDS: dict[str, tuple[Any, str]] = {
    "id": (lambda v: isinstance(v, str) and ID_PATTERN.fullmatch(v) is not None, "id of letters, digits, '_', '-', '.'"),
    "file": (lambda v: isinstance(v, str) and v != "", "non-empty string"),
    "script": (lambda v: isinstance(v, (bytes, str)), "bytes"),
    "project": (lambda v: isinstance(v, str), "string"),
    "command": (lambda v: (isinstance(v, str) and v.strip() != "") or (_str_list(v) and len(v) > 0),
                "non-empty string or list of strings"),
    "args": (lambda v: isinstance(v, str) or _str_list(v), "string or list of strings"),
    "env": (_str_map, "map of string to string"),
    "type": (lambda v: v in JOB_TYPES, "one of run, service"),
    "requirement": (lambda v: isinstance(v, str) and v != "", "non-empty string"),
    "priority": (_int, "integer"),
    "delay": (lambda v: _num(v) and v >= 0, "non-negative number"),
    "depends_on": (lambda v: isinstance(v, str) or _str_list(v), "list of job ids"),
    "affinity": (lambda v: isinstance(v, bool), "boolean"),
    "retries": (lambda v: _int(v) and v >= 0, "non-negative integer"),
    "timeout": (lambda v: v is None or (_num(v) and v > 0), "positive number"),
    "port": (lambda v: v is None or (_int(v) and 0 < v < 65536), "port number"),
    "hitl_message": (lambda v: v is None or isinstance(v, str), "string"),
    "max_wait_seconds": (lambda v: v is None or (_num(v) and v >= 0), "non-negative number"),
}
FIELD_NAMES = frozenset(_FIELDS)


def split_args(value: str | list[str]) -> list[str]:
    """A string is split like a shell would (quotes respected); a list is kept as it is."""
    return shlex.split(value) if isinstance(value, str) else list(value)


def parse_job(raw: Any, where: str = "job") -> JobSpec:
    """Check one job map field by field; raise InvalidRequest naming the first bad field."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where}: expected a map of job fields, got {type(raw).__name__}")
    for key in raw:
        if key not in _FIELDS:
            raise InvalidRequest(f"{where}.{key}: unknown field")
    if "id" not in raw:
        raise InvalidRequest(f"{where}.id: required")
    for key, value in raw.items():
        check, expected = _FIELDS[key]
        if not check(value):
            raise InvalidRequest(f"{where}.{key}: expected {expected}, got {value!r:.60}")
    data = dict(raw)
    name = data["id"]
    if data.get("command") is None and data.get("file") is None:
        raise InvalidRequest(f"{where} ({name}): needs a file or a command")
    if isinstance(data.get("command"), str):
        data["command"] = split_args(data["command"])
    if isinstance(data.get("script"), str):
        data["script"] = data["script"].encode()
    for key in ("args", "depends_on"):
        if isinstance(data.get(key), str):
            data[key] = split_args(data[key]) if key == "args" else [data[key]]
    if "delay" in data:
        data["delay"] = float(data["delay"])
    if "requirement" in data:
        data["requirement"] = data["requirement"].upper()  # tags are case-insensitive, as on workers
    return JobSpec(**data)


def parse_jobs(raw: Any, where: str = "jobs") -> list[JobSpec]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest(f"{where}: expected a non-empty list of jobs")
    return [parse_job(item, f"{where}[{i}]") for i, item in enumerate(raw)]


def validate_dag(jobs: list[JobSpec], existing: set[str] | frozenset[str] = frozenset()) -> None:
    """Reject duplicate ids, unknown parents and cycles, naming the jobs involved.

    ``existing`` holds ids already in the run (jobs added to a running run may depend on them).
    """
    seen: set[str] = set()
    dups = []
    for job in jobs:
        if job.id in seen or job.id in existing:
            dups.append(job.id)
        seen.add(job.id)
    if dups:
        raise InvalidRequest(f"duplicate job id(s): {', '.join(sorted(set(dups)))}")
    known = seen | set(existing)
    for job in jobs:
        missing = [p for p in job.depends_on if p not in known]
        if missing:
            raise InvalidRequest(f"job {job.id!r} depends on unknown job(s): {', '.join(missing)}")
        if job.id in job.depends_on:
            raise InvalidRequest(f"cycle: job {job.id!r} depends on itself")
    cycle = find_cycle({j.id: j.depends_on for j in jobs})
    if cycle:
        raise InvalidRequest(f"cycle between jobs: {' -> '.join(cycle)}")


def find_cycle(parents: dict[str, list[str]]) -> list[str] | None:
    """Return one cycle as a path (first id repeated at the end), or None. Iterative DFS, O(V + E)."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(parents, white)
    for root in parents:
        if color[root] != white:
            continue
        color[root] = grey
        path = [root]
        stack = [iter(parents.get(root, []))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                color[path.pop()] = black
                stack.pop()
            elif nxt not in color:
                continue  # a parent outside this set (an existing job): cannot close a cycle here
            elif color[nxt] == grey:
                return path[path.index(nxt):] + [nxt]
            elif color[nxt] == white:
                color[nxt] = grey
                path.append(nxt)
                stack.append(iter(parents.get(nxt, [])))
    return None
