"""The Constructor's pure logic (ui/constructor): the form from the schema, checks, YAML and Python code."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from client import pipeline
from client.job import TitanJob, wire_jobs
from titan_zmq.jobspec import JOB_TYPES, JobSpec, rule, schema
from ui.constructor import codegen
from ui.constructor import draft as D

pytestmark = pytest.mark.timeout(30)

ARGS = ["it's", 'say "hi"', "two words", "a: b", "- x", "#c", "yes", "1.5", "", "last"]  # YAML traps: each one argument


@dataclass(frozen=True)
class GraceSpec(JobSpec):
    """A field added the way a real one would be (as tests/unit/test_schema.py does)."""

    kill_grace: float = field(default=5.0, metadata=rule(
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, "non-negative number",
        "seconds between SIGTERM and SIGKILL", example=2.0, normalise=float))


def build(*jobs: tuple[str, dict[str, Any], list[str]], name: str = "p") -> dict[str, Any]:
    """A draft from (id, typed values, parent ids), as the page would hold it."""
    d = D.new_draft(name)
    keys = {}
    for job_id, values, parents in jobs:
        key = D.add_node(d)
        keys[job_id] = key
        n = D.node(d, key)
        assert n is not None
        n["values"].update(values, id=job_id, depends_on=[keys[p] for p in parents])
    return d


def diamond() -> dict[str, Any]:
    return build(("root", {"command": "echo\nroot"}, []),
                 ("a", {"command": "printf\n<%s>\\n", "args": "\n".join(ARGS), "env": "MODE=fast\nX=a=b"}, ["root"]),
                 ("b", {"file": "greet.py", "priority": "5", "timeout": "1.5", "affinity": ["on"]}, ["root"]),
                 ("sink", {"command": "true", "type": "service", "port": "8080", "retries": "0"}, ["a", "b"]))


def test_the_form_has_every_user_field_of_the_schema_in_order() -> None:
    s = schema()
    got = D.form_fields()
    assert [f.name for f in got] == [n for n in s.names if n in s.user]
    kinds = {f.name: f.kind for f in got}
    assert kinds == {"id": "text", "file": "script", "command": "lines", "args": "lines", "env": "map",
                     "type": "choice", "requirement": "text", "priority": "number", "delay": "number",
                     "depends_on": "parents", "affinity": "bool", "retries": "number", "timeout": "number",
                     "port": "number", "hitl_message": "text", "max_wait_seconds": "number",
                     "restart": "text", "max_restarts": "number", "restart_window": "number", "health": "map",
                     "stop_grace": "number"}
    assert next(f for f in got if f.name == "type").choices == JOB_TYPES


def test_a_new_schema_field_appears_in_form_check_and_code_with_no_edit() -> None:
    assert "kill_grace" in [f.name for f in D.form_fields(GraceSpec)]
    grace = next(f for f in D.form_fields(GraceSpec) if f.name == "kill_grace")
    assert grace.kind == "number" and grace.default == 5.0 and grace.doc == "seconds between SIGTERM and SIGKILL"
    d = build(("j", {"command": "true", "kill_grace": "-1"}, []))
    report = D.check(d, GraceSpec)
    assert report.fields[d["nodes"][0]["key"]] == {"kill_grace": "kill_grace: expected non-negative number, got -1"}
    D.node(d, d["nodes"][0]["key"])["values"]["kill_grace"] = "2.5"  # type: ignore[index]
    report = D.check(d, GraceSpec)
    assert report.ok
    doc = yaml.safe_load(codegen.to_yaml(d, report))
    assert doc["jobs"][0]["kill_grace"] == 2.5
    assert pipeline.parse(doc, Path("."), spec=GraceSpec).jobs[0]["kill_grace"] == 2.5
    assert "kill_grace=2.5" in codegen.to_python(d, report, "tcp://127.0.0.1:9")


def test_the_yaml_pane_loads_as_the_same_pipeline(tmp_path: Path) -> None:
    d = diamond()
    report = D.check(d, scripts={"greet.py"})
    assert report.ok, report.problems()
    text = codegen.to_yaml(d, report)
    assert "titan download greet.py greet.py" in text
    (tmp_path / "greet.py").write_text("print('hi')\n")
    (tmp_path / "p.yaml").write_text(text)
    loaded = pipeline.load(tmp_path / "p.yaml")
    by_id = {j["id"]: j for j in loaded.jobs}
    assert by_id["a"]["args"] == ARGS and by_id["a"]["env"] == {"MODE": "fast", "X": "a=b"}
    assert by_id["b"]["script"] == b"print('hi')\n" and by_id["b"]["priority"] == 5 and by_id["b"]["affinity"] is True
    assert by_id["sink"]["depends_on"] == ["a", "b"] and by_id["sink"]["port"] == 8080 and by_id["sink"]["retries"] == 0
    assert by_id["root"] == {"id": "root", "command": ["echo", "root"], **{k: v for k, v in by_id["root"].items()
                                                                          if k not in ("id", "command")}}


def test_the_python_pane_submits_what_the_yaml_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = diamond()
    report = D.check(d, scripts={"greet.py"})
    (tmp_path / "greet.py").write_text("print('hi')\n")
    (tmp_path / "p.yaml").write_text(codegen.to_yaml(d, report))
    from_yaml = pipeline.load(tmp_path / "p.yaml").submission()

    submitted: dict[str, Any] = {}

    class FakeClient:
        def __init__(self, address: str) -> None:
            submitted["address"] = address

        def __enter__(self) -> FakeClient:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def download_asset(self, name: str, dest: str) -> None:
            submitted.setdefault("fetched", []).append((name, dest))

        def submit_dag(self, name: str, jobs: list[TitanJob], agent_run_id: str | None = None) -> Any:
            submitted.update(name=name, jobs=wire_jobs(jobs), agent_run_id=agent_run_id)
            return type("R", (), {"run_id": "run-1"})()

    monkeypatch.setattr("client.api.TitanClient", FakeClient)
    monkeypatch.chdir(tmp_path)
    exec(compile(codegen.to_python(d, report, "tcp://127.0.0.1:9"), "pane.py", "exec"), {})
    assert submitted["address"] == "tcp://127.0.0.1:9" and submitted["fetched"] == [("greet.py", "greet.py")]
    assert submitted["name"] == from_yaml["name"] and submitted["jobs"] == from_yaml["jobs"]
    assert [TitanJob(i, **kw) for i, kw in map(codegen.job_arguments, codegen.jobs(d, report))] \
        == codegen.titan_jobs(codegen.jobs(d, report))


def test_bad_fields_are_named_with_the_validators_message_each_at_once() -> None:
    d = build(("a b", {"command": "true", "priority": "high", "delay": "-1", "env": "NOEQUALS",
                       "requirement": "x" * 5000, "type": "daemon"}, []))
    report = D.check(d)
    errors = report.fields[d["nodes"][0]["key"]]
    assert errors["id"].startswith("id: expected id of letters")
    assert errors["priority"] == "priority: expected integer from -2147483647 to 2147483647, got 'high'"
    assert errors["delay"].startswith("delay: expected non-negative number of seconds")
    assert errors["env"] == "env: line 1: expected NAME=value, got 'NOEQUALS'"
    assert errors["requirement"].startswith("requirement: expected non-empty string of at most")
    assert errors["type"] == f"type: expected one of {', '.join(JOB_TYPES)}, got 'daemon'"
    assert not report.ok and "NOT VALID YET" in codegen.to_yaml(d, report)


def test_job_level_problems_pipeline_name_and_scripts() -> None:
    d = build(("j", {}, []), name="")
    report = D.check(d, scripts=set())
    assert report.jobs == {d["nodes"][0]["key"]: "needs a file or a command"}
    assert report.top == {"name": "name: required (the run's name)"}
    D.node(d, d["nodes"][0]["key"])["values"].update(file="gone.py", command="true")  # type: ignore[union-attr]
    report = D.check(d, scripts=set())
    assert "no uploaded file named 'gone.py'" in report.fields[d["nodes"][0]["key"]]["file"]
    assert D.check(build(), scripts=set()).dag == "add a job to start"


def test_cycles_and_duplicate_ids_are_shown_on_the_jobs_involved() -> None:
    d = build(("x", {"command": "true"}, []), ("y", {"command": "true"}, ["x"]), ("z", {"command": "true"}, []))
    x, y, z = (n["key"] for n in d["nodes"])
    D.node(d, x)["values"]["depends_on"] = [y]  # type: ignore[index]
    report = D.check(d)
    assert report.dag == "cycle between jobs: x -> y -> x"
    assert report.fields[x]["depends_on"] == report.fields[y]["depends_on"] == report.dag and z not in report.fields
    assert D.depths(d)[z] == 0  # a cycle is cut, not an endless recursion
    D.node(d, x)["values"]["depends_on"] = []  # type: ignore[index]
    D.node(d, z)["values"]["id"] = "x"  # type: ignore[index]
    report = D.check(d)
    assert report.dag == "duplicate job id(s): x" and report.fields[z]["id"] == report.dag


def test_renaming_and_removing_keep_the_edges_right() -> None:
    d = build(("root", {"command": "true"}, []), ("leaf", {"command": "true"}, ["root"]))
    root, leaf = (n["key"] for n in d["nodes"])
    D.node(d, root)["values"]["id"] = "start"  # type: ignore[index]
    assert D.parents(d, D.node(d, leaf)) == ["start"]  # type: ignore[arg-type]
    assert D.depths(d) == {root: 0, leaf: 1}
    D.remove_node(d, root)
    assert D.node(d, leaf)["values"]["depends_on"] == []  # type: ignore[index]
    assert D.add_node(d) == "n3" and [D.job_id(n) for n in d["nodes"]] == ["leaf", "job2"]


def test_drafts_read_back_are_cleaned() -> None:
    d = diamond()
    assert D.clean(json.loads(json.dumps(d))) == d
    junk = {"name": 3, "nodes": [{"key": "n1", "values": {"id": "a", "depends_on": ["n9"], "x": {"deep": 1}}},
                                 "garbage", {"values": {}}], "next": "z"}
    assert D.clean(junk) == {"version": 1, "name": "", "agent_run_id": "", "next": 2,
                             "nodes": [{"key": "n1", "values": {"id": "a", "depends_on": []}}]}
    assert D.clean(None) == D.new_draft()
