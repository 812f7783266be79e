"""The Constructor's draft: a DAG being built in the browser, its form fields and its validation (no I/O).

A draft is plain JSON (it lives in a ``dcc.Store`` and, saved, in the store under ``ui/drafts/<name>``)::

    {"version": 1, "name": "etl", "agent_run_id": "", "next": 3,
     "nodes": [{"key": "n1", "values": {"id": "root", "command": "echo\\nhi", "depends_on": []}}, ...]}

Each node keeps what the user typed, field by field, under a stable ``key`` (ids change as one types;
``depends_on`` holds parent *keys*, so renaming a job keeps its edges). The form is derived from the job
schema, :class:`titan_zmq.jobspec.JobSpec`: one :class:`FormField` per user field, in declaration
order, its widget chosen from the rule's example (bool, number, list, map, text) unless the field is one
of the few with a richer widget (``type``'s choices, ``depends_on``'s parents, ``file``'s script picker).
A field added to the schema therefore appears in the form, the validation and the generated code with no
edit here. Validation is the schema's own :func:`~titan_zmq.jobspec.parse_job` (what ``titan run`` and
the broker use) and :func:`~titan_zmq.jobspec.validate_dag`; see :func:`check`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from titan_zmq.errors import InvalidRequest
from titan_zmq.jobspec import (
    JOB_TYPES,
    JobSpec,
    Rule,
    check_name,
    find_cycle,
    parse_job,
    schema,
    validate_dag,
)

VERSION = 1
TOP_FIELDS = ("name", "agent_run_id")  # the pipeline's own fields the constructor edits (client/pipeline.py)
WIDGETS = {"depends_on": "parents", "file": "script"}  # fields with a widget of their own
CHOICES: dict[str, tuple[str, ...]] = {"type": JOB_TYPES}  # fields whose values are a fixed list
INT = re.compile(r"[+-]?\d+")


class FormError(ValueError):
    """What the user typed cannot even be turned into a value for the schema to check."""


UNSET = object()  # a field left empty: the schema's default applies, and the generated code leaves it out


@dataclass(frozen=True)
class FormField:
    """One input of the job form, derived from a schema field."""

    name: str
    kind: str  # text | number | lines | map | bool | choice | parents | script
    doc: str
    expected: str
    default: Any  # the schema's default (None: not set)
    choices: tuple[str, ...] = ()

    @property
    def placeholder(self) -> str:
        """What an empty input means (the default), or how to fill it."""
        if self.kind == "lines":
            return "one per line (each line is one item, as typed: no shell quoting)"
        if self.kind == "map":
            return "NAME=value, one per line"
        if self.default in (None, "", [], {}):
            return "not set"
        return f"default {self.default}"


def kind_of(name: str, r: Rule) -> str:
    """The widget for a field: its own, else from the type of its rule's example."""
    if name in WIDGETS:
        return WIDGETS[name]
    if name in CHOICES:
        return "choice"
    example = r.example
    if isinstance(example, bool):
        return "bool"
    if isinstance(example, int | float):
        return "number"
    if isinstance(example, list):
        return "lines"
    if isinstance(example, dict):
        return "map"
    return "text"


def form_fields(spec: type[JobSpec] = JobSpec) -> list[FormField]:
    """The job form: every user field of ``spec``, in the schema's order."""
    s = schema(spec)
    defaults = s.defaults()
    return [FormField(name, kind_of(name, s.rules[name]), s.rules[name].doc, s.rules[name].expected,
                      defaults.get(name), CHOICES.get(name, ()))
            for name in s.names if name in s.user]


# ---- the draft ----------------------------------------------------------------------------------------------


def new_draft(name: str = "") -> dict[str, Any]:
    return {"version": VERSION, "name": name, "agent_run_id": "", "next": 1, "nodes": []}


def clean(doc: Any) -> dict[str, Any]:
    """A draft read back from the store or a browser, with anything malformed dropped (never trusted)."""
    out = new_draft()
    if not isinstance(doc, dict):
        return out
    for top in TOP_FIELDS:
        if isinstance(doc.get(top), str):
            out[top] = doc[top]
    nodes = [n for n in doc.get("nodes") or [] if isinstance(n, dict) and isinstance(n.get("key"), str)
             and isinstance(n.get("values"), dict)]
    keys = {n["key"] for n in nodes}
    out["nodes"] = [{"key": n["key"], "values": _clean_values(n["values"], keys)} for n in nodes]
    out["next"] = max([doc["next"] if isinstance(doc.get("next"), int) else 1]
                      + [int(k[1:]) + 1 for k in keys if INT.fullmatch(k[1:])])
    return out


def _clean_values(values: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    out = {k: v for k, v in values.items() if isinstance(k, str) and isinstance(v, str | bool | list | None)}
    parents = out.get("depends_on")
    out["depends_on"] = [p for p in parents if p in keys] if isinstance(parents, list) else []
    return out


def node(draft: dict[str, Any], key: str | None) -> dict[str, Any] | None:
    return next((n for n in draft["nodes"] if n["key"] == key), None)


def add_node(draft: dict[str, Any], job_type: str = "run") -> str:
    """Add a job (ids job1, job2, ... not yet taken); returns its key."""
    key = f"n{draft['next']}"
    draft["next"] += 1
    taken = {n["values"].get("id") for n in draft["nodes"]}
    number = len(draft["nodes"]) + 1
    while f"job{number}" in taken:
        number += 1
    values: dict[str, Any] = {"id": f"job{number}", "depends_on": []}
    if job_type != "run":
        values["type"] = job_type
    draft["nodes"].append({"key": key, "values": values})
    return key


def remove_node(draft: dict[str, Any], key: str) -> None:
    """Remove a job and every edge to it."""
    draft["nodes"] = [n for n in draft["nodes"] if n["key"] != key]
    for n in draft["nodes"]:
        n["values"]["depends_on"] = [p for p in n["values"].get("depends_on") or [] if p != key]


def job_id(n: dict[str, Any]) -> str:
    value = n["values"].get("id")
    return value.strip() if isinstance(value, str) and value.strip() else f"({n['key']})"


def parents(draft: dict[str, Any], n: dict[str, Any]) -> list[str]:
    """A node's parents as job ids (edges to removed nodes are dropped)."""
    ids = {m["key"]: job_id(m) for m in draft["nodes"]}
    return [ids[p] for p in n["values"].get("depends_on") or [] if p in ids]


# ---- from typed text to the schema's raw values ------------------------------------------------------------


def raw_value(f: FormField, value: Any) -> Any:
    """What the user typed for ``f`` as YAML would give it to the schema, or UNSET; FormError if it cannot be."""
    if f.kind in ("bool", "choice"):
        given = bool(value) if f.kind == "bool" else value  # a checkbox gives the list of ticked options
        return UNSET if value is None or given == f.default else given
    if f.kind == "lines":
        lines = str(value or "").replace("\r", "").split("\n")
        while lines and lines[-1] == "":
            lines.pop()
        return lines or UNSET
    if f.kind == "map":
        return _env(str(value or "")) or UNSET
    text = "" if value is None else str(value)
    if text.strip() == "":
        return UNSET
    return _number(text.strip()) if f.kind == "number" else text


def _number(text: str) -> Any:
    """An int, else a float, else the text itself (the schema then says what it expected)."""
    if INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _env(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, line in enumerate(text.replace("\r", "").split("\n"), 1):
        if not line.strip():
            continue
        name, eq, value = line.partition("=")
        if not eq:
            raise FormError(f"line {i}: expected NAME=value, got {line!r}")
        out[name.strip()] = value
    return out


# ---- checking ------------------------------------------------------------------------------------------------


@dataclass
class Report:
    """What is wrong with a draft: per node and field, per node, per pipeline field, and the DAG."""

    fields: dict[str, dict[str, str]] = field(default_factory=dict)  # node key -> field -> message
    jobs: dict[str, str] = field(default_factory=dict)  # node key -> a message about the job as a whole
    top: dict[str, str] = field(default_factory=dict)  # name / agent_run_id -> message
    dag: str | None = None  # duplicate ids, cycles (validate_dag's message)
    raws: dict[str, dict[str, Any]] = field(default_factory=dict)  # node key -> the job map that was checked

    @property
    def ok(self) -> bool:
        return not (self.fields or self.jobs or self.top or self.dag)

    def problems(self) -> list[str]:
        """Every message, one line each (the first goes on the Deploy button's refusal)."""
        out = list(self.top.values()) + ([self.dag] if self.dag else [])
        out += list(self.jobs.values()) + [m for fs in self.fields.values() for m in fs.values()]
        return out


def check(draft: dict[str, Any], spec: type[JobSpec] = JobSpec, scripts: set[str] | None = None) -> Report:
    """Check a draft with the schema's validators; ``scripts`` (the uploaded files) checks ``file`` too."""
    report = Report()
    for top in TOP_FIELDS:
        value = draft.get(top) or None
        try:
            if top == "name" and value is None:
                raise InvalidRequest("name: required (the run's name)")
            check_name(value, top)
        except InvalidRequest as exc:
            report.top[top] = str(exc)
    if not draft["nodes"]:
        report.dag = "add a job to start"
    fields = form_fields(spec)
    for i, n in enumerate(draft["nodes"]):
        errors, raw = _check_node(draft, n, i, fields, spec, scripts)
        report.raws[n["key"]] = raw
        if errors:
            report.fields[n["key"]] = errors
        if "" in errors:
            report.jobs[n["key"]] = errors.pop("")
            if not errors:
                del report.fields[n["key"]]
    if draft["nodes"]:
        _check_dag(draft, report)
    return report


def _check_node(draft: dict[str, Any], n: dict[str, Any], i: int, fields: list[FormField],
                spec: type[JobSpec], scripts: set[str] | None) -> tuple[dict[str, str], dict[str, Any]]:
    """Field errors ("" for the job as a whole) and the job map built from the fields that are fine."""
    errors: dict[str, str] = {}
    raw: dict[str, Any] = {}
    for f in fields:
        try:
            value = parents(draft, n) if f.kind == "parents" else raw_value(f, n["values"].get(f.name))
            if f.kind == "script" and value is not UNSET and scripts is not None and value not in scripts:
                raise FormError(f"no uploaded file named {value!r}: upload it, or choose one")
        except FormError as exc:
            errors[f.name] = f"{f.name}: {exc}"
            continue
        if value is not UNSET and value != []:
            raw[f.name] = value
    where = f"jobs[{i}]"
    checked = dict(raw)
    for _ in range(len(fields) + 2):  # parse_job stops at the first bad field: note it, drop it, go on
        try:
            parse_job(checked, where, spec)
            break
        except InvalidRequest as exc:
            name, message = _blame(str(exc), where)
            errors.setdefault(name, message)
            if name == "":
                break
            if name == "id":
                checked["id"] = "placeholder"  # so the other fields are still checked
            else:
                checked.pop(name, None)
    for name in errors:
        raw.pop(name, None)
    return errors, raw


def _blame(message: str, where: str) -> tuple[str, str]:
    """The field a parse_job message names ("" for the job as a whole), and the message without the job path."""
    m = re.match(re.escape(where) + r"\.(\w+)", message)
    if m:
        return m.group(1), message[len(where) + 1:]
    m = re.match(re.escape(where) + r" \([^)]*\): ", message)
    return "", message[m.end():] if m else message


def _check_dag(draft: dict[str, Any], report: Report) -> None:
    """Duplicate ids and cycles, with validate_dag's message on the jobs involved."""
    stand_ins = [JobSpec(id=job_id(n), depends_on=parents(draft, n)) for n in draft["nodes"]]
    try:
        validate_dag(stand_ins)
    except InvalidRequest as exc:
        report.dag = str(exc)
    if report.dag is None:
        return
    ids = [s.id for s in stand_ins]
    cycle = set(find_cycle({s.id: s.depends_on for s in stand_ins}) or [])
    for n, ident in zip(draft["nodes"], ids, strict=True):
        if ids.count(ident) > 1:
            report.fields.setdefault(n["key"], {}).setdefault("id", report.dag)
        elif ident in cycle:
            report.fields.setdefault(n["key"], {}).setdefault("depends_on", report.dag)


def depths(draft: dict[str, Any]) -> dict[str, int]:
    """Each node's layer: 0 without parents, else one more than its deepest parent (a cycle is cut)."""
    by_key = {n["key"]: n for n in draft["nodes"]}
    out: dict[str, int] = {}

    def depth(key: str, seen: frozenset[str]) -> int:
        if key in out:
            return out[key]
        ps = [p for p in by_key[key]["values"].get("depends_on") or [] if p in by_key and p not in seen]
        d = 1 + max((depth(p, seen | {key}) for p in ps), default=-1)
        out[key] = d
        return d

    for key in by_key:
        depth(key, frozenset())
    return out
