"""Job specs: per-field checks with the field named in the error, and whole-DAG validation."""

from __future__ import annotations

import pytest

from titan_zmq import defaults
from titan_zmq.errors import InvalidRequest
from titan_zmq.jobspec import JobSpec, find_cycle, parse_job, parse_jobs, split_args, validate_dag


def job(id: str, *parents: str) -> JobSpec:
    return JobSpec(id=id, command=["true"], depends_on=list(parents))


def invalid(fn, *args, **kw) -> str:
    with pytest.raises(InvalidRequest) as info:
        fn(*args, **kw)
    return str(info.value)


# ---- parse_job ------------------------------------------------------------------------------------


def test_minimal_job_gets_defaults() -> None:
    spec = parse_job({"id": "a", "command": ["echo", "hi"]})
    assert spec == JobSpec(id="a", command=["echo", "hi"])
    assert spec.requirement == defaults.CAPABILITY == "GENERAL"
    assert spec.retries == defaults.RETRIES == 3
    assert spec.priority == 0 and spec.delay == 0.0 and spec.type == "run"
    assert spec.depends_on == [] and spec.args == [] and spec.env == {}


def test_full_job_round_trips_through_wire_form() -> None:
    raw = {
        "id": "train.v2_x-1", "file": "train.py", "script": b"print(1)", "args": ["--n", "3"], "env": {"K": "v"},
        "type": "service", "requirement": "GPU", "priority": 5, "delay": 2, "depends_on": ["prep"],
        "affinity": True, "retries": 0, "timeout": 1.5, "port": 8080, "hitl_message": "ok?", "max_wait_seconds": 10,
    }
    spec = parse_job(raw)
    assert spec.delay == 2.0 and isinstance(spec.delay, float)
    assert parse_job(spec.to_wire()) == spec
    assert "command" not in spec.to_wire()  # None fields are left out of the wire form


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("priority", "high", "expected integer"),
        ("priority", 1.5, "expected integer"),
        ("priority", True, "expected integer"),
        ("retries", -1, "expected non-negative integer"),
        ("delay", -0.5, "expected non-negative number"),
        ("delay", "5", "expected non-negative number"),
        ("timeout", 0, "expected positive number"),
        ("port", 70000, "expected port number"),
        ("affinity", "yes", "expected boolean"),
        ("env", {"K": 1}, "expected map of string to string"),
        ("args", [1, 2], "expected string or list of strings"),
        ("command", [], "expected string or list of strings"),
        ("type", "batch", "expected one of run, service"),
        ("requirement", "", "expected non-empty string"),
        ("depends_on", [1], "expected list of job ids"),
    ],
)
def test_bad_field_names_path_and_expected_type(field: str, value: object, expected: str) -> None:
    jobs = [{"id": "a", "command": "true"}, {"id": "b", "command": "true"}, {"id": "c", "command": "true", field: value}]
    msg = invalid(parse_jobs, jobs)
    assert msg.startswith(f"jobs[2].{field}: expected "), msg
    assert expected.removeprefix("expected ") in msg, msg


def test_priority_error_message_exact_prefix() -> None:
    jobs = [{"id": f"j{i}", "command": "true"} for i in range(3)]
    jobs[2]["priority"] = "high"
    assert invalid(parse_jobs, jobs).startswith("jobs[2].priority: expected integer")


def test_unknown_field_rejected() -> None:
    msg = invalid(parse_job, {"id": "a", "command": "true", "priorty": 3}, "jobs[0]")
    assert msg == "jobs[0].priorty: unknown field"


def test_id_required_and_file_or_command_required() -> None:
    assert invalid(parse_job, {"command": "true"}, "jobs[1]") == "jobs[1].id: required"
    msg = invalid(parse_job, {"id": "lonely"}, "jobs[0]")
    assert "lonely" in msg and "file or a command" in msg


def test_not_a_map_and_empty_list() -> None:
    assert "jobs[0]: expected a map" in invalid(parse_jobs, ["a"])
    assert "non-empty list" in invalid(parse_jobs, [])
    assert "non-empty list" in invalid(parse_jobs, {"id": "a"})


@pytest.mark.parametrize("bad", ["a/b", "a b", "", "../x", ".hidden", "-dash", "x" * 129, "é", "a\nb", 5])
def test_id_pattern_enforced(bad: object) -> None:
    msg = invalid(parse_job, {"id": bad, "command": "true"}, "jobs[0]")
    assert msg.startswith("jobs[0].id: expected id"), msg


@pytest.mark.parametrize("good", ["a", "A_1", "_x", "1", "step.v2-final", "x" * 128])
def test_id_pattern_accepts(good: str) -> None:
    assert parse_job({"id": good, "command": "true"}).id == good


def test_args_string_split_with_quotes() -> None:
    spec = parse_job({"id": "a", "file": "x.py", "args": "--a 'b c' \"d e\""})
    assert spec.args == ["--a", "b c", "d e"]
    assert split_args("--a 'b c' \"d e\"") == ["--a", "b c", "d e"]
    assert split_args(["keep 'as' is"]) == ["keep 'as' is"]


def test_args_list_kept_verbatim() -> None:
    spec = parse_job({"id": "a", "file": "x.py", "args": ["a b", "'c'", "|,"]})
    assert spec.args == ["a b", "'c'", "|,"]


def test_command_string_split() -> None:
    spec = parse_job({"id": "a", "command": "python -c 'print(1, 2)' --flag"})
    assert spec.command == ["python", "-c", "print(1, 2)", "--flag"]


def test_depends_on_string_is_one_parent_and_script_str_becomes_bytes() -> None:
    spec = parse_job({"id": "b", "file": "b.py", "script": "print('é')", "depends_on": "a"})
    assert spec.depends_on == ["a"]
    assert spec.script == "print('é')".encode()


@pytest.mark.parametrize("command", ["", "   "])
def test_empty_command_string_rejected(command: str) -> None:
    # an empty command would split to [] and make a job with nothing to run
    msg = invalid(parse_job, {"id": "a", "command": command}, "jobs[0]")
    assert msg.startswith("jobs[0].command: expected"), msg


# ---- validate_dag ---------------------------------------------------------------------------------


def test_valid_diamond_passes() -> None:
    validate_dag([job("a"), job("b", "a"), job("c", "a"), job("d", "b", "c")])


def test_duplicate_ids_named() -> None:
    msg = invalid(validate_dag, [job("a"), job("b"), job("a"), job("b", "a"), job("c")])
    assert "duplicate" in msg and "a" in msg and "b" in msg and "c" not in msg.split(":", 1)[1]


def test_unknown_parent_named() -> None:
    msg = invalid(validate_dag, [job("a"), job("b", "a", "ghost")])
    assert "'b'" in msg and "ghost" in msg and "unknown" in msg


def test_self_dependency_named() -> None:
    msg = invalid(validate_dag, [job("a"), job("loop", "loop")])
    assert "loop" in msg and "itself" in msg


def test_three_cycle_names_all_jobs() -> None:
    msg = invalid(validate_dag, [job("root"), job("x", "z"), job("y", "x"), job("z", "y", "root")])
    assert msg.startswith("cycle")
    names = msg.split(":", 1)[1]
    for name in ("x", "y", "z"):
        assert name in names
    assert "root" not in names


def test_find_cycle_returns_closed_path() -> None:
    path = find_cycle({"a": ["c"], "b": ["a"], "c": ["b"], "d": []})
    assert path is not None and path[0] == path[-1] and set(path) == {"a", "b", "c"} and len(path) == 4
    assert find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None


def test_find_cycle_deep_chain_is_iterative() -> None:
    n = 20_000  # deeper than Python's recursion limit
    chain = {f"j{i}": ([f"j{i - 1}"] if i else []) for i in range(n)}
    assert find_cycle(chain) is None
    chain["j0"] = [f"j{n - 1}"]
    path = find_cycle(chain)
    assert path is not None and len(path) == n + 1


def test_existing_ids_allow_depending_on_earlier_jobs() -> None:
    validate_dag([job("c", "a"), job("d", "c", "b")], existing={"a", "b"})
    msg = invalid(validate_dag, [job("c", "a")], existing={"b"})
    assert "a" in msg and "unknown" in msg


def test_existing_ids_cannot_be_reused() -> None:
    msg = invalid(validate_dag, [job("a")], existing={"a"})
    assert "duplicate" in msg and "a" in msg


def test_requirement_is_case_insensitive_like_worker_tags() -> None:
    """Workers upper-case their --capability tags; a job's requirement must match them whatever its case."""
    assert parse_job({"id": "g", "command": ["true"], "requirement": "gpu"}).requirement == "GPU"
    assert parse_job({"id": "h", "command": ["true"], "requirement": "High_Mem"}).requirement == "HIGH_MEM"
