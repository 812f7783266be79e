"""Job specs: per-field checks with the field named in the error, and whole-DAG validation."""

from __future__ import annotations

import math

import pytest

from titan_zmq import defaults
from titan_zmq.errors import InvalidRequest
from titan_zmq.jobspec import JobSpec, check_name, find_cycle, parse_job, parse_jobs, split_args, validate_dag
from titan_zmq.protocol import Op, decode, encode


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


# ---- hostile and careless input (issue 8): refused at submission, with the field named ------------------

BIG = 2**64


@pytest.mark.parametrize(("field", "value"), [
    ("command", "echo 'x"), ("args", "--name 'unclosed"), ("command", 'say "hi'),
])
def test_unbalanced_quotes_are_an_invalid_request_naming_the_field(field: str, value: str) -> None:
    job = {"id": "a", "command": "true", field: value}
    msg = invalid(parse_job, job, "jobs[0]")
    assert msg.startswith(f"jobs[0].{field}: cannot split ") and "No closing quotation" in msg, msg


@pytest.mark.parametrize(("field", "value"), [
    ("priority", BIG), ("priority", -BIG), ("priority", 2**63), ("priority", 10**5000),
    ("retries", BIG), ("retries", defaults.MAX_RETRIES + 1), ("port", BIG),
    ("timeout", BIG), ("max_wait_seconds", BIG), ("delay", BIG),
], ids=lambda v: v if isinstance(v, str) else f"{v.bit_length()}bits")
def test_integers_beyond_their_range_are_refused_not_overflowed(field: str, value: int) -> None:
    msg = invalid(parse_job, {"id": "a", "command": "true", field: value})
    assert msg.startswith(f"job.{field}: expected "), msg
    assert len(msg) < 300, msg  # a 5000-digit integer is not printed back


def test_every_field_at_its_limits_packs_on_the_wire() -> None:
    spec = parse_job({"id": "a", "command": "true", "priority": -defaults.MAX_PRIORITY, "retries": defaults.MAX_RETRIES,
                      "delay": defaults.MAX_SECONDS, "timeout": defaults.MAX_SECONDS,
                      "max_wait_seconds": defaults.MAX_SECONDS, "hitl_message": "q" * defaults.MAX_TEXT_CHARS})
    assert decode(encode(Op.SUBMIT_JOB, {"job": spec.to_wire()})).body["job"]["retries"] == defaults.MAX_RETRIES


@pytest.mark.parametrize("field", ["delay", "timeout", "max_wait_seconds"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e300, defaults.MAX_SECONDS + 1])
def test_seconds_must_be_finite_and_at_most_a_year(field: str, value: float) -> None:
    msg = invalid(parse_job, {"id": "a", "command": "true", field: value})
    assert msg.startswith(f"job.{field}: expected ") and f"at most {defaults.MAX_SECONDS}" in msg, msg


@pytest.mark.parametrize(("extra", "needle"), [
    ({"command": "true", "file": "a.py"}, "give a file or a command, not both"),
    ({"command": "true", "script": b"x"}, "script and project go with a file"),
    ({"command": "true", "project": "ab" * 32}, "script and project go with a file"),
    ({"file": "a.py", "script": b"x", "project": "ab" * 32}, "inline (script) or in a project, not both"),
])
def test_what_runs_is_a_file_or_a_command_never_both(extra: dict[str, object], needle: str) -> None:
    assert needle in invalid(parse_job, {"id": "a", **extra})


@pytest.mark.parametrize("project", [
    "../../../tmp/evil", "/etc", "AB" * 32, "ab" * 31, "ab" * 33, "g" * 64, "ab" * 31 + "a/", "",
])
def test_project_is_a_sha256_hex_id_never_a_path(project: str) -> None:
    msg = invalid(parse_job, {"id": "a", "file": "main.py", "project": project})
    assert msg.startswith("job.project: expected sha256 of the archive"), msg


@pytest.mark.parametrize(("env", "needle"), [
    ({"A=B": "x"}, "job.env: 'A=B' is not a variable name"),
    ({"A\x00B": "x"}, "is not a variable name"),
    ({"": "x"}, "is not a variable name"),
    ({"A": "x\x00y"}, "job.env.A: contains a NUL byte"),
])
def test_env_names_and_values_exec_would_refuse(env: dict[str, str], needle: str) -> None:
    msg = invalid(parse_job, {"id": "a", "command": "true", "env": env})
    assert needle in msg, msg


@pytest.mark.parametrize(("extra", "needle"), [
    ({"args": ["ok", "a\x00b"]}, "job.args[1]: contains a NUL byte"),
    ({"command": ["echo", "\x00"]}, "job.command[1]: contains a NUL byte"),
    ({"command": [""]}, "job.command: the program name is empty"),
    ({"command": "''"}, "job.command: the program name is empty"),
    ({"args": ["\ud800"]}, "job.args[0]: not valid Unicode"),
])
def test_strings_exec_would_refuse(extra: dict[str, object], needle: str) -> None:
    msg = invalid(parse_job, {"id": "a", "command": "true", **extra})
    assert needle in msg, msg


def test_argument_env_and_command_sizes_are_capped_at_submission() -> None:
    one_mb = "x" * (1024 * 1024)
    assert "job.args[0]: 1048576 bytes, over the cap" in invalid(parse_job, {"id": "a", "command": "true", "args": [one_mb]})
    assert "job.env.BIG: " in invalid(parse_job, {"id": "a", "command": "true", "env": {"BIG": one_mb}})
    assert "job.command[0]: " in invalid(parse_job, {"id": "a", "command": [one_mb]})
    utf8 = "é" * (defaults.MAX_ARG_BYTES // 2 + 1)  # under the cap in characters, over it in bytes
    assert "over the cap" in invalid(parse_job, {"id": "a", "command": "true", "args": [utf8]})
    at_cap = "x" * defaults.MAX_ARG_BYTES
    parse_job({"id": "a", "command": "true", "args": [at_cap]})
    many = [at_cap] * (defaults.MAX_EXEC_BYTES // defaults.MAX_ARG_BYTES)  # each allowed, together too many
    msg = invalid(parse_job, {"id": "a", "command": "true", "args": many})
    assert msg.startswith("job (a): command, args and env take ") and f"cap of {defaults.MAX_EXEC_BYTES}" in msg


@pytest.mark.parametrize(("field", "limit"), [
    ("requirement", defaults.MAX_NAME_CHARS), ("file", defaults.MAX_PATH_CHARS),
    ("hitl_message", defaults.MAX_TEXT_CHARS),
])
def test_free_text_fields_have_length_caps(field: str, limit: int) -> None:
    base = {"id": "a"} | ({"command": "true"} if field != "file" else {})
    parse_job(base | {field: "x" * limit})
    msg = invalid(parse_job, base | {field: "x" * (limit + 1)})
    assert msg.startswith(f"job.{field}: expected non-empty string of at most {limit} characters"), msg
    assert len(msg) < 300, msg
    assert invalid(parse_job, base | {field: "a\x00b"}).startswith(f"job.{field}: expected")


def test_depends_on_holds_job_ids_only() -> None:
    assert invalid(parse_job, {"id": "a", "command": "true", "depends_on": ["x" * 10_000]}).startswith(
        "job.depends_on: expected list of job ids")
    assert invalid(parse_job, {"id": "a", "command": "true", "depends_on": "../b"}).startswith(
        "job.depends_on: expected list of job ids")


def test_job_count_per_submission_is_capped_before_any_job_is_read() -> None:
    msg = invalid(parse_jobs, [None] * (defaults.MAX_JOBS_PER_SUBMISSION + 1))
    assert msg.startswith(f"jobs: {defaults.MAX_JOBS_PER_SUBMISSION + 1} jobs, over the cap of"), msg
    assert len(parse_jobs([{"id": f"j{i}", "command": "true"} for i in range(defaults.MAX_JOBS_PER_SUBMISSION)])) \
        == defaults.MAX_JOBS_PER_SUBMISSION


@pytest.mark.parametrize("bad", ["", "n" * (defaults.MAX_NAME_CHARS + 1), "a\x00b", 5, ["x"]])
def test_run_names_are_capped(bad: object) -> None:
    msg = invalid(check_name, bad, "name")
    assert msg.startswith(f"name: expected non-empty string of at most {defaults.MAX_NAME_CHARS} characters")
    check_name("n" * defaults.MAX_NAME_CHARS, "name")
    check_name(None, "agent_run_id")
