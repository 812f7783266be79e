"""One job schema: JobSpec's fields drive parse_job, the YAML loader, TitanJob, the wire and the README."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from client.api import TitanClient
from client.job import TitanJob, wire_jobs
from client.pipeline import TOP_FIELDS, load
from titan_zmq import defaults
from titan_zmq.errors import InvalidRequest, PipelineError
from titan_zmq.jobspec import JobSpec, parse_job, parse_jobs, rule, schema, validate_dag

README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass(frozen=True)
class GraceSpec(JobSpec):
    """The real schema plus one field, declared as a new field would be: one definition, nothing else."""

    kill_grace: float = field(default=5.0, metadata=rule(
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, "non-negative number",
        "seconds between SIGTERM and SIGKILL", example=2.0, normalise=float))


class GraceJob(TitanJob):
    spec = GraceSpec


def invalid(fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(InvalidRequest) as info:
        fn(*args, **kw)
    return str(info.value)


def write_yaml(tmp_path: Path, job: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(f"name: x\njobs:\n  - {job}\n"))
    return path


# ---- every real field ------------------------------------------------------------------------------


def test_every_field_has_a_rule_whose_example_is_valid_and_not_the_default() -> None:
    s = schema()
    assert s.names == tuple(f.name for f in fields(JobSpec))
    assert s.required == ("id",)
    defaults_ = s.defaults()
    for name, r in s.rules.items():
        assert r.doc and r.expected, name
        assert r.check(r.example), f"{name}: example {r.example!r} fails its own check"
        assert name not in defaults_ or r.example != defaults_[name], f"{name}: example is the default"


SOURCES = ({"file", "script"}, {"file", "project"}, {"command"})  # what runs: one of these, never two


@pytest.mark.parametrize("source", SOURCES)
def test_round_trip_over_every_field_with_non_default_values(source: set[str]) -> None:
    s = schema()
    left_out = set().union(*SOURCES) - source
    spec = parse_job({name: r.example for name, r in s.rules.items() if name not in left_out})
    for name, r in s.rules.items():
        assert getattr(spec, name) == (None if name in left_out else r.example), name
    assert set(spec.to_wire()) == set(s.names) - left_out  # nothing else left out: no other field is None
    assert parse_job(spec.to_wire()) == spec


def test_defaults_are_fresh_objects() -> None:
    a, b = schema().defaults(), schema().defaults()
    assert a == b and a["args"] is not b["args"] and a["env"] is not b["env"]
    assert a["requirement"] == defaults.CAPABILITY and a["retries"] == defaults.RETRIES


# ---- README's YAML reference ---------------------------------------------------------------------


def readme_reference() -> dict[str, Any]:
    section = README.read_text().split("## YAML pipelines", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "README.md: no ```yaml block under '## YAML pipelines'"
    doc: dict[str, Any] = yaml.safe_load(block.group(1))
    return doc


def test_readme_yaml_reference_matches_the_schema() -> None:
    doc = readme_reference()
    documented = {key for job in doc["jobs"] for key in job}
    user = schema().user
    assert not user - documented, f"schema fields missing from README.md's YAML reference: {sorted(user - documented)}"
    assert not documented - user, f"README.md documents job fields the schema lacks: {sorted(documented - user)}"
    assert set(doc) == set(TOP_FIELDS)


def test_readme_yaml_reference_is_a_valid_pipeline() -> None:
    validate_dag(parse_jobs(readme_reference()["jobs"]))


# ---- a new field: one definition, picked up everywhere ---------------------------------------------


def test_new_field_in_yaml(tmp_path: Path) -> None:
    bad = write_yaml(tmp_path, "{id: a, command: [echo], kill_grace: soon}")
    with pytest.raises(PipelineError) as info:
        load(bad, GraceSpec)
    assert "jobs[0].kill_grace: expected non-negative number, got 'soon'" in str(info.value)
    good = write_yaml(tmp_path, "{id: a, command: [echo], kill_grace: 2}")
    assert load(good, GraceSpec).jobs[0]["kill_grace"] == 2.0
    with pytest.raises(PipelineError, match=r"jobs\[0\].kill_grace: unknown field"):
        load(good)  # the real schema is untouched


def test_new_field_in_the_client() -> None:
    wire = GraceJob("a", command=["true"], kill_grace=2).to_wire()
    assert wire["kill_grace"] == 2.0 and parse_job(wire, spec=GraceSpec) == GraceSpec("a", command=["true"], kill_grace=2.0)
    assert GraceJob("a", command=["true"]).to_wire()["kill_grace"] == 5.0
    msg = invalid(GraceJob("a", command=["true"], kill_grace=-1).to_wire)
    assert msg.startswith("job.kill_grace: expected non-negative number"), msg
    assert invalid(TitanJob, "a", command=["true"], kill_grace=2) == "job.kill_grace: unknown field"


def test_new_field_round_trips_on_the_wire() -> None:
    spec = parse_job({"id": "a", "command": "true", "kill_grace": 1}, spec=GraceSpec)
    assert isinstance(spec, GraceSpec) and spec.kill_grace == 1.0
    assert spec.to_wire()["kill_grace"] == 1.0
    assert parse_job(spec.to_wire(), spec=GraceSpec) == spec
    assert invalid(parse_job, spec.to_wire()) == "job.kill_grace: unknown field"


# ---- TitanJob keeps the SDK's constructor and checks before sending ------------------------------------


def test_titan_job_sdk_names_become_wire_names(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print(1)\n")
    job = TitanJob("train", filename="train.py", parents=["prep"], job_type="service", args="--n 3",
                   requirement="gpu", priority=2, delay=1, port=8080, env={"K": "v"})
    wire = job.to_wire(tmp_path)
    assert wire == {
        "id": "train", "file": "train.py", "script": b"print(1)\n", "args": ["--n", "3"], "env": {"K": "v"},
        "type": "service", "requirement": "GPU", "priority": 2, "delay": 1.0, "depends_on": ["prep"],
        "affinity": False, "retries": defaults.RETRIES, "port": 8080,
        "restart": defaults.SERVICE_RESTART, "max_restarts": defaults.SERVICE_MAX_RESTARTS,
        "restart_window": defaults.SERVICE_RESTART_WINDOW, "stop_grace": defaults.SERVICE_STOP_GRACE,
    }


def test_titan_job_attributes_read_and_write_like_the_dataclass() -> None:
    job = TitanJob("c1", command=["true"])
    assert job.job_id == "c1" and job.filename is None and job.parents == [] and job.retries == defaults.RETRIES
    job.parents = ["c0"]  # client/bench.py chains jobs this way
    job.priority = 3
    assert job.to_wire()["depends_on"] == ["c0"] and job.to_wire()["priority"] == 3
    assert job == TitanJob("c1", command=["true"], parents=["c0"], priority=3) != TitanJob("c1", command=["true"])
    assert "parents=['c0']" in repr(job)
    with pytest.raises(AttributeError):
        _ = job.no_such_field
    assert invalid(setattr, job, "priorty", 1) == "job.priorty: unknown field"


@pytest.mark.parametrize("wire_name", ["id", "file", "project", "depends_on", "type"])
def test_titan_job_refuses_wire_names_it_spells_otherwise(wire_name: str) -> None:
    assert invalid(TitanJob, "a", command=["true"], **{wire_name: "x"}) == f"job.{wire_name}: unknown field"


def test_titan_job_script_is_the_content_and_filename_its_name(tmp_path: Path) -> None:
    job = TitanJob("a", filename="gen.py", script="print(1)\n")
    wire = job.to_wire(base_dir=tmp_path / "missing")  # nothing is read from disk
    assert (wire["file"], wire["script"]) == ("gen.py", b"print(1)\n")
    assert job == TitanJob("a", filename="gen.py", script=b"print(1)\n") != TitanJob("a", filename="gen.py")
    assert "needs a filename" in invalid(TitanJob("a", script="x").to_wire)


def test_titan_job_errors_name_the_field_like_the_broker() -> None:
    jobs = [TitanJob("a", command=["true"]), TitanJob("b", command=["true"]), TitanJob("c", command="true",
                                                                                       priority="high")]
    msg = invalid(wire_jobs, jobs)
    assert msg.startswith("jobs[2].priority: expected integer from") and msg.endswith(", got 'high'"), msg
    assert invalid(TitanJob("lonely").to_wire) == "job (lonely): needs a file or a command"
    assert invalid(TitanJob("a/b", command=["true"]).to_wire).startswith("job.id: expected id")


def test_titan_job_missing_script_is_a_pipeline_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="nowhere.py"):
        TitanJob("a", filename="nowhere.py").to_wire(tmp_path)


class _NoConn:
    """Stands in for the client's connection: any request is a test failure."""

    timeout = 1.0

    def request(self, *args: Any, **kw: Any) -> Any:
        raise AssertionError(f"sent a request: {args!r}")


def test_client_refuses_a_bad_job_before_sending() -> None:
    client = TitanClient.__new__(TitanClient)  # no sockets in unit tests
    client.conn = _NoConn()  # type: ignore[assignment]
    assert invalid(client.submit_job, TitanJob("a", command=["true"], retries=-1)).startswith(
        "job.retries: expected non-negative integer")
    assert invalid(client.submit_dag, "d", [TitanJob("a", command=["true"]), TitanJob("b", delay="5")]).startswith(
        "jobs[1].delay: expected non-negative number")
    assert invalid(client.add_jobs, [TitanJob("a", command=["true"], env={"K": 1})], run_id="r").startswith(
        "jobs[0].env: expected map of string to string")


CAPS = ("MAX_JOBS_PER_SUBMISSION", "MAX_JOBS_PER_RUN", "MAX_NAME_CHARS", "MAX_PATH_CHARS", "MAX_TEXT_CHARS",
        "MAX_ARG_BYTES", "MAX_EXEC_BYTES", "MAX_PRIORITY", "MAX_RETRIES", "MAX_SECONDS")


@pytest.mark.parametrize("cap", CAPS)
def test_readme_lists_every_submission_cap_with_its_value(cap: str) -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith(f"| `{cap}` |")]
    assert rows, f"README.md's limits table has no row for {cap}"
    assert f"| {getattr(defaults, cap):,} |" in rows[0], f"README.md: {rows[0]!r}, but {cap} = {getattr(defaults, cap):,}"
