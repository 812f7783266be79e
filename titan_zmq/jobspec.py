"""The job schema (:class:`JobSpec`), job validation and whole-DAG validation.

:class:`JobSpec` is the single source of truth for a job's fields. Each field is declared once, with
its type, its default and a :class:`Rule` in its metadata: the check, the phrase the error puts after
"expected", a one-line doc, an example value, an optional normaliser, and whether users write it. The rest
is derived from it: :func:`parse_job` (broker, YAML loader and client all validate with it, and name the
field in the error: ``jobs[2].priority: expected integer``), ``JobSpec.to_wire``, the YAML loader's job
keys, and the keyword arguments and wire form of ``client.TitanJob``. :func:`validate_dag` checks a
submission as a whole (duplicate ids, unknown parents, cycles) so that nothing of a bad one ever runs.

Adding a field (``restart``, ``health``, ``stop_grace``, ``schedule``, ...) is one edit here: declare it
on :class:`JobSpec` as ``name: T = field(default=..., metadata=rule(check, "expected phrase", "doc",
example=...))``, where

- the default is what a job that does not say has (old journals and clients stay valid), and None means
  "not set": None values are left off the wire;
- ``check(raw) -> bool`` takes the value as YAML or msgpack gives it, before normalising, and accepts None
  only if None may be sent explicitly; ``expected`` completes ``<job>.<field>: expected ...``;
- ``normalise(raw)`` (optional) turns an accepted raw value into the field's type (split a string, ...);
- ``example`` is a valid, non-default value, already normalised (the round-trip tests use it);
- ``user=False`` marks a wire-only field that the loader or client fills in (``script``, ``project``).

Then document it in README.md's YAML reference if users write it (a unit test compares the two). The
YAML loader, ``TitanJob`` (which takes it as a keyword argument) and the wire pick it up with no edit;
the broker, worker and scheduler only need edits to act on it. Cross-field rules (a file or a command)
live in :func:`parse_job`, and so do the caps that keep a job runnable (``defaults.MAX_ARG_BYTES`` and
``MAX_EXEC_BYTES`` for what goes to exec, no NUL bytes, no ``=`` in an env name): a job the worker could
not start is refused at submission, not after its retries. Every field is bounded (a length, a range, a
finite number), so a submission is checked in time linear in its size and packs with msgpack.
"""

from __future__ import annotations

import re
import reprlib
import shlex
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any

from titan_zmq import capabilities, defaults
from titan_zmq.errors import InvalidRequest

JOB_TYPES = ("run", "service", "gate")
GATE_PREFIX = "hitl-gate-"  # the gate a job with hitl_message gets after it: hitl-gate-<job id>
ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # safe in paths and PUB topics
BLOB_ID_PATTERN = re.compile(r"[0-9a-f]{64}")  # a project archive's id: its sha256, as the broker computes it
RULE = "titan_rule"  # the metadata key of a field's Rule

Check = Callable[[Any], bool]


@dataclass(frozen=True)
class Rule:
    """How one job field is checked, normalised and documented."""

    check: Check  # takes the raw value (YAML or msgpack), before normalising
    expected: str  # completes "<job>.<field>: expected ..."
    doc: str  # one line, for references
    example: Any  # a valid non-default value, already normalised
    normalise: Callable[[Any], Any] | None = None  # an accepted raw value -> the field's type
    user: bool = True  # False: wire-only, set by the loader or client (no YAML key, no TitanJob argument)


def rule(check: Check, expected: str, doc: str, *, example: Any,
         normalise: Callable[[Any], Any] | None = None, user: bool = True) -> dict[str, Rule]:
    """The ``field(metadata=...)`` of a JobSpec field."""
    return {RULE: Rule(check, expected, doc, example, normalise, user)}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_in(low: int, high: int) -> Check:
    return lambda v: _int(v) and low <= v <= high


def _seconds(positive: bool = False) -> Check:
    """A number of seconds up to MAX_SECONDS (NaN and infinities fail the comparison)."""
    return lambda v: _num(v) and (v > 0 if positive else v >= 0) and v <= defaults.MAX_SECONDS


def _text(limit: int) -> Check:
    """A non-empty string of at most ``limit`` characters, with no NUL byte, that encodes as UTF-8."""
    return lambda v: isinstance(v, str) and 0 < len(v) <= limit and "\x00" not in v and _utf8(v)


def _utf8(v: str) -> bool:
    try:
        v.encode()
    except UnicodeEncodeError:  # a lone surrogate (YAML's "\ud800"): msgpack could not pack it
        return False
    return True


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _str_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


def _optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _ids(v: Any) -> bool:
    return isinstance(v, str) and ID_PATTERN.fullmatch(v) is not None


def brief(value: Any) -> str:
    """A short repr for error messages, whatever the value (huge ints, deep or long containers)."""
    try:
        return _BRIEF.repr(value)
    except ValueError:  # an int too long to print
        return f"an integer of {value.bit_length()} bits"


_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 60


def split_args(value: str | list[str]) -> list[str]:
    """A string is split like a shell would (quotes respected); a list is kept as it is."""
    return shlex.split(value) if isinstance(value, str) else list(value)


def _if_str(convert: Callable[[str], Any]) -> Callable[[Any], Any]:
    return lambda v: convert(v) if isinstance(v, str) else v


RESTART_POLICIES = ("always", "on-failure", "never")


def _health(v: Any) -> bool:
    """tcp | none | {http: "/path"} | {command: argv list or string}."""
    if v in ("tcp", "none"):
        return True
    if not isinstance(v, dict) or len(v) != 1:
        return False
    kind, arg = next(iter(v.items()))
    if kind == "http":
        return _text(defaults.MAX_PATH_CHARS)(arg) and arg.startswith("/")
    if kind == "command":
        return (isinstance(arg, str) and arg.strip() != "") or (_str_list(arg) and len(arg) > 0 and arg[0] != "")
    return False


def _health_normal(v: Any) -> Any:
    if isinstance(v, dict) and isinstance(v.get("command"), str):
        return {"command": split_args(v["command"])}
    return v


@dataclass(frozen=True)
class JobSpec:
    """One job as every part of titan-zmq sees it; the field list is the job schema (module docstring)."""

    id: str = field(metadata=rule(
        _ids,
        "id of letters, digits, '_', '-', '.'", "required; unique in the run: letters, digits, _ - .",
        example="train.v2_x-1"))
    file: str | None = field(default=None, metadata=rule(
        _text(defaults.MAX_PATH_CHARS), f"non-empty string of at most {defaults.MAX_PATH_CHARS} characters",
        "the script to run (relative to the YAML file); its name picks the interpreter", example="train.py"))
    script: bytes | None = field(default=None, metadata=rule(
        lambda v: isinstance(v, (bytes, str)), "bytes", "the script's content, shipped inline with the job",
        example=b"print(1)", normalise=_if_str(str.encode), user=False))
    project: str | None = field(default=None, metadata=rule(
        lambda v: isinstance(v, str) and BLOB_ID_PATTERN.fullmatch(v) is not None, "sha256 of the archive (hex)",
        "id of the project archive (project mode); file is a path in it",
        example="ab" * 32, user=False))
    command: list[str] | None = field(default=None, metadata=rule(
        lambda v: (isinstance(v, str) and v.strip() != "") or (_str_list(v) and len(v) > 0),
        "non-empty string or list of strings", "an argv to run instead of a file; a string is split by shlex",
        example=["python", "-c", "print(1)"], normalise=_if_str(split_args)))
    args: list[str] = field(default_factory=list, metadata=rule(
        lambda v: isinstance(v, str) or _str_list(v), "string or list of strings",
        "arguments; a string is split like a shell would (quotes respected)", example=["--n", "a b"],
        normalise=split_args))
    env: dict[str, str] = field(default_factory=dict, metadata=rule(
        _str_map, "map of string to string", "extra environment variables (names without '=')", example={"MODE": "fast"}))
    type: str = field(default="run", metadata=rule(
        lambda v: v in JOB_TYPES, "one of run, service, gate",
        "run | service | gate (a human approval: no file or command, holds no worker slot)", example="service"))
    requirement: str = field(default=defaults.CAPABILITY, metadata=rule(
        _text(defaults.MAX_NAME_CHARS), f"non-empty string of at most {defaults.MAX_NAME_CHARS} characters",
        "capability tag (GENERAL, GPU, HIGH_MEM, any tag); case-insensitive, as on workers",
        example="GPU", normalise=capabilities.tag))
    priority: int = field(default=0, metadata=rule(
        _int_in(-defaults.MAX_PRIORITY, defaults.MAX_PRIORITY),
        f"integer from {-defaults.MAX_PRIORITY} to {defaults.MAX_PRIORITY}", "higher first, FIFO among equals",
        example=5))
    delay: float = field(default=0.0, metadata=rule(
        _seconds(), f"non-negative number of seconds, at most {defaults.MAX_SECONDS}",
        "seconds, counted from the moment the parents are done", example=2.5, normalise=float))
    depends_on: list[str] = field(default_factory=list, metadata=rule(
        lambda v: _ids(v) or (isinstance(v, list) and all(_ids(x) for x in v)), "list of job ids",
        "ids of the jobs that must complete first (a string is one id)", example=["prep"],
        normalise=_if_str(lambda v: [v])))
    affinity: bool = field(default=False, metadata=rule(
        lambda v: isinstance(v, bool), "boolean", "run on the worker that ran the first parent (falls back)",
        example=True))
    retries: int = field(default=defaults.RETRIES, metadata=rule(
        _int_in(0, defaults.MAX_RETRIES), f"non-negative integer, at most {defaults.MAX_RETRIES}",
        "retries after the first attempt", example=0))
    timeout: float | None = field(default=None, metadata=rule(
        _optional(_seconds(positive=True)), f"positive number of seconds, at most {defaults.MAX_SECONDS}",
        "seconds; the whole process group is killed after it", example=1.5))
    port: int | None = field(default=None, metadata=rule(
        _optional(lambda v: _int(v) and 0 <= v < 65536), "port number (0: the worker picks a free one)",
        "service: the port it listens on (given as PORT); 0 or absent: the worker picks a free one",
        example=8080))
    restart: str = field(default=defaults.SERVICE_RESTART, metadata=rule(
        lambda v: v in RESTART_POLICIES, "one of always, on-failure, never",
        "service: restart after an exit: always | on-failure (non-zero exit) | never", example="always"))
    max_restarts: int = field(default=defaults.SERVICE_MAX_RESTARTS, metadata=rule(
        _int_in(0, defaults.MAX_RETRIES), f"non-negative integer, at most {defaults.MAX_RETRIES}",
        "service: more exits than this within restart_window and it ends FAILED (a crash loop)", example=2))
    restart_window: float = field(default=defaults.SERVICE_RESTART_WINDOW, metadata=rule(
        _seconds(positive=True), f"positive number of seconds, at most {defaults.MAX_SECONDS}",
        "service: seconds over which exits count towards max_restarts", example=30.0, normalise=float))
    health: str | dict[str, Any] | None = field(default=None, metadata=rule(
        _optional(_health), "tcp, none, {http: /path} or {command: [argv...]}",
        "service: READY when this passes: tcp (connects to the port; the default), {http: /path} (2xx),"
        " {command: [...]} (exit 0), none (once started)",
        example={"http": "/health"}, normalise=_health_normal))
    stop_grace: float = field(default=defaults.SERVICE_STOP_GRACE, metadata=rule(
        _seconds(), f"non-negative number of seconds, at most {defaults.MAX_SECONDS}",
        "service: seconds between SIGTERM and SIGKILL when it is stopped", example=2.0, normalise=float))
    hitl_message: str | None = field(default=None, metadata=rule(
        _optional(_text(defaults.MAX_TEXT_CHARS)), f"non-empty string of at most {defaults.MAX_TEXT_CHARS} characters",
        "approval gate: the question put to a human (on a run job: a gate hitl-gate-<id> follows it)",
        example="ok?"))
    max_wait_seconds: float | None = field(default=None, metadata=rule(
        _optional(_seconds()), f"non-negative number of seconds, at most {defaults.MAX_SECONDS}",
        f"approval gate: seconds to wait for a decision (default {defaults.GATE_MAX_WAIT}); then TIMED_OUT",
        example=10))

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-ready map of the spec (fields that are None left out)."""
        names = schema(type(self)).names
        return {name: value for name in names if (value := getattr(self, name)) is not None}


@dataclass(frozen=True)
class Schema:
    """What the rest of titan-zmq derives from a spec class (see :func:`schema`)."""

    fields: tuple[Field[Any], ...]  # in declaration order
    rules: dict[str, Rule]
    names: tuple[str, ...]
    required: tuple[str, ...]  # fields without a default
    user: frozenset[str]  # fields users write: YAML job keys, TitanJob arguments

    def defaults(self) -> dict[str, Any]:
        """A fresh default for every field that has one (new lists and maps each call)."""
        out = {f.name: f.default for f in self.fields if f.default is not MISSING}
        out.update({f.name: f.default_factory() for f in self.fields if f.default_factory is not MISSING})
        return out


def schema(spec: type[JobSpec] = JobSpec) -> Schema:
    """The schema of a spec class: :class:`JobSpec`, or a subclass that adds fields (tests do)."""
    found = _SCHEMAS.get(spec)
    if found is None:
        declared = fields(spec)
        rules: dict[str, Rule] = {f.name: f.metadata[RULE] for f in declared}
        found = _SCHEMAS[spec] = Schema(
            fields=declared, rules=rules, names=tuple(rules),
            required=tuple(f.name for f in declared if f.default is MISSING and f.default_factory is MISSING),
            user=frozenset(name for name, r in rules.items() if r.user),
        )
    return found


_SCHEMAS: dict[type[JobSpec], Schema] = {}  # derived once per spec class: parse_job and to_wire are hot


def parse_job(raw: Any, where: str = "job", spec: type[JobSpec] = JobSpec) -> JobSpec:
    """Check one job map field by field; raise InvalidRequest naming the first bad field."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where}: expected a map of job fields, got {type(raw).__name__}")
    s = schema(spec)
    for key in raw:
        if key not in s.rules:
            raise InvalidRequest(f"{where}.{key}: unknown field")
    for key in s.required:
        if key not in raw:
            raise InvalidRequest(f"{where}.{key}: required")
    data = {}
    for key, value in raw.items():
        r = s.rules[key]
        if not r.check(value):
            raise InvalidRequest(f"{where}.{key}: expected {r.expected}, got {brief(value)}")
        try:
            data[key] = value if r.normalise is None else r.normalise(value)
        except ValueError as exc:  # shlex: "No closing quotation"
            raise InvalidRequest(f"{where}.{key}: cannot split {brief(value)}: {exc}") from None
    _check_source(data, where)
    _check_exec(data, where)
    return spec(**data)


def _check_source(data: dict[str, Any], where: str) -> None:
    """What runs: a file (its script inline, or a path in a project archive) or a command, never both;
    a gate runs nothing."""
    if data.get("type") == "gate":
        extra = [key for key in ("file", "command", "script", "project") if data.get(key) is not None]
        if extra:
            raise InvalidRequest(f"{where} ({data['id']}): a gate runs nothing: no {extra[0]}")
        return
    given = [key for key in ("file", "command") if data.get(key) is not None]
    if not given:
        raise InvalidRequest(f"{where} ({data['id']}): needs a file or a command")
    if len(given) == 2:
        raise InvalidRequest(f"{where} ({data['id']}): give a file or a command, not both")
    if given == ["command"] and (data.get("script") is not None or data.get("project") is not None):
        raise InvalidRequest(f"{where} ({data['id']}): script and project go with a file, not a command")
    if data.get("script") is not None and data.get("project") is not None:
        raise InvalidRequest(f"{where} ({data['id']}): a file comes inline (script) or in a project, not both")


def _exec_strings(data: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """Every string that goes to exec (argv words and NAME=value env entries), each with its place."""
    out = [(f"{where}.command[{i}]", word) for i, word in enumerate(data.get("command") or ())]
    out += [(f"{where}.args[{i}]", arg) for i, arg in enumerate(data.get("args", ()))]
    for name, value in data.get("env", {}).items():
        if name == "" or "=" in name or "\x00" in name:
            raise InvalidRequest(f"{where}.env: {brief(name)} is not a variable name (empty, or has '=' or NUL)")
        out.append((f"{where}.env.{name}", f"{name}={value}"))
    return out


def _check_exec(data: dict[str, Any], where: str) -> None:
    """Refuse at submission what exec would refuse at every attempt: NUL bytes, oversized strings."""
    command = data.get("command")
    if command is not None and (not command or command[0] == ""):
        raise InvalidRequest(f"{where}.command: the program name is empty")
    total = 0
    for place, text in _exec_strings(data, where):
        if "\x00" in text:
            raise InvalidRequest(f"{place}: contains a NUL byte")
        try:
            size = len(text.encode())
        except UnicodeEncodeError:
            raise InvalidRequest(f"{place}: not valid Unicode (a lone surrogate)") from None
        if size > defaults.MAX_ARG_BYTES:
            raise InvalidRequest(f"{place}: {size} bytes, over the cap of {defaults.MAX_ARG_BYTES} per string")
        total += size + 1
    if total > defaults.MAX_EXEC_BYTES:
        raise InvalidRequest(f"{where} ({data['id']}): command, args and env take {total} bytes,"
                             f" over the cap of {defaults.MAX_EXEC_BYTES}")


def gate_id(job_id: str) -> str:
    """The id of the gate that follows a job with ``hitl_message``."""
    return GATE_PREFIX + job_id


def expand_gates(jobs: list[JobSpec], gated: frozenset[str] | set[str] = frozenset()) -> list[JobSpec]:
    """Jobs with the gates their ``hitl_message`` asks for: a job ``x`` of type run with a message gets
    a gate ``hitl-gate-x`` right after it (same message and ``max_wait_seconds``), and the jobs that
    depended on ``x`` depend on the gate instead. ``gated`` names jobs already in the run that have such a
    gate (jobs added later that depend on them wait for the gate too)."""
    ours = {j.id for j in jobs if j.hitl_message is not None and j.type == "run"}
    if not ours and not gated:
        return jobs
    redirect = ours | set(gated)
    out: list[JobSpec] = []
    for job in jobs:
        if any(p in redirect for p in job.depends_on):
            job = replace(job, depends_on=[gate_id(p) if p in redirect else p for p in job.depends_on])
        out.append(job)
        if job.id in ours:
            gid = gate_id(job.id)
            if not ID_PATTERN.fullmatch(gid):
                raise InvalidRequest(f"job {job.id!r}: its gate id {gid!r} would be longer than 128 characters")
            out.append(JobSpec(id=gid, type="gate", hitl_message=job.hitl_message,
                               max_wait_seconds=job.max_wait_seconds, depends_on=[job.id]))
    return out


def check_job_count(count: int, where: str = "jobs") -> None:
    """At most MAX_JOBS_PER_SUBMISSION jobs per submission: the broker handles one in bounded time."""
    if count > defaults.MAX_JOBS_PER_SUBMISSION:
        raise InvalidRequest(f"{where}: {count} jobs, over the cap of {defaults.MAX_JOBS_PER_SUBMISSION}"
                             " per submission (split the work, or add jobs to the run in batches)")


def check_name(value: Any, where: str, limit: int = defaults.MAX_NAME_CHARS) -> None:
    """A run's name or agent_run_id (None: not given): a non-empty string of at most ``limit`` characters."""
    if value is not None and not _text(limit)(value):
        raise InvalidRequest(f"{where}: expected non-empty string of at most {limit} characters,"
                             f" got {brief(value)}")


def parse_jobs(raw: Any, where: str = "jobs", spec: type[JobSpec] = JobSpec) -> list[JobSpec]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest(f"{where}: expected a non-empty list of jobs")
    check_job_count(len(raw), where)
    return [parse_job(item, f"{where}[{i}]", spec) for i, item in enumerate(raw)]


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
