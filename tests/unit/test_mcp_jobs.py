"""The MCP server's adapter without a cluster: jobs as an agent sends them -> TitanJobs -> the wire, and
the tools' answers when the client lacks a feature."""

from __future__ import annotations

import inspect
import json
from typing import Any

import anyio
import pytest
from pydantic import ValidationError

from client.api import TitanClient
from client.job import TitanJob
from client.mcp_jobs import McpJob, from_wire, to_titan_job, to_titan_jobs
from client.mcp_server import TOOLS, TitanTools, build, jsonable, parse_bind
from client.pipeline import parse
from titan_zmq import defaults
from titan_zmq.errors import InvalidRequest
from titan_zmq.jobspec import JobSpec, schema

pytestmark = pytest.mark.timeout(30)


def test_the_model_has_every_user_field_of_the_job_schema():
    # a field added to JobSpec must be added to McpJob too (and README's MCP section), or agents cannot use it
    assert set(McpJob.model_fields) == schema(JobSpec).user | {"script"}


def test_script_content_ships_inline_under_its_file_name_and_nothing_is_read_from_disk(tmp_path):
    job = McpJob(id="train", script="print('hi')\n", file="train.py", args="--n 3", priority=5,
                 env={"MODE": "fast"}, requirement="gpu", retries=0, timeout=9.5)
    titan_job = to_titan_job(job, base_dir=tmp_path / "nowhere")
    assert isinstance(titan_job, TitanJob) and titan_job.script == b"print('hi')\n"
    wire = titan_job.to_wire()
    assert wire["file"] == "train.py" and wire["script"] == b"print('hi')\n"
    assert wire["args"] == ["--n", "3"] and wire["priority"] == 5 and wire["env"] == {"MODE": "fast"}
    assert wire["requirement"] == "GPU" and wire["retries"] == 0 and wire["timeout"] == 9.5


def test_fields_left_out_take_the_schema_defaults():
    wire = to_titan_job(McpJob(id="a", command="echo hi")).to_wire()
    assert wire["command"] == ["echo", "hi"]
    assert wire["retries"] == defaults.RETRIES and wire["priority"] == 0 and wire["requirement"] == "GENERAL"
    assert "script" not in wire and "file" not in wire


def test_parents_and_depends_on_both_make_edges_and_gate_fields_pass_through():
    jobs = [McpJob(id="a", command=["true"], hitl_message="ship it?", max_wait_seconds=30),
            McpJob.model_validate({"id": "b", "command": ["true"], "parents": ["a"]}),
            McpJob(id="c", command=["true"], depends_on="b")]
    wires = [j.to_wire(where=f"jobs[{i}]") for i, j in enumerate(to_titan_jobs(jobs))]
    assert [w["depends_on"] for w in wires] == [[], ["a"], ["b"]]
    assert wires[0]["hitl_message"] == "ship it?" and wires[0]["max_wait_seconds"] == 30


def test_a_file_without_script_is_read_on_this_host_and_shipped_inline(tmp_path):
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "s.sh").write_text("echo from disk\n")
    wire = to_titan_job(McpJob(id="s", file="steps/s.sh"), base_dir=tmp_path).to_wire()
    assert wire["file"] == "s.sh" and wire["script"] == b"echo from disk\n"


@pytest.mark.parametrize("job, phrase", [
    (McpJob(id="a", script="print(1)"), "a script needs `file`"),
    (McpJob(id="a", script="x", file="a.py", command=["true"]), "give a file or a command, not both"),
    (McpJob(id="a", command=["true"], priority=2**40), "job.priority: expected integer from"),
    (McpJob(id="bad id", command=["true"]), "expected id of letters"),
    (McpJob(id="a", command=["true"], type="nonsense"), "type: expected one of"),
])
def test_bad_jobs_fail_with_the_validators_message(job, phrase):
    with pytest.raises(InvalidRequest) as err:
        to_titan_job(job).to_wire()
    assert phrase in str(err.value)


def test_unknown_fields_are_refused_by_the_model():
    with pytest.raises(ValidationError, match="colour"):
        McpJob.model_validate({"id": "a", "command": ["true"], "colour": "red"})


def test_a_pipeline_from_text_goes_through_titanjobs_unchanged(tmp_path):
    (tmp_path / "step.py").write_text("print('step')\n")
    doc = {"name": "p", "jobs": [{"id": "a", "file": "step.py", "args": ["x"]},
                                 {"id": "b", "command": ["echo", "b"], "depends_on": ["a"], "priority": 3}]}
    pipe = parse(doc, tmp_path)
    again = [from_wire(job).to_wire(where=f"jobs[{i}]") for i, job in enumerate(pipe.jobs)]
    assert again == pipe.jobs


def test_bind_addresses_parse_or_say_what_is_wrong():
    assert parse_bind("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_bind("[::1]:9000") == ("::1", 9000)
    for bad in ("8765", "host:", "host:99999", ":80"):
        with pytest.raises(ValueError, match="expected HOST:PORT"):
            parse_bind(bad)


def test_jsonable_turns_bytes_into_text_or_base64():
    assert jsonable({"a": b"text", "b": (1, b"\xff")}) == {"a": "text", "b": [1, {"base64": "/w=="}]}


class NoFeatures:
    """A client without the gates change's methods."""

    def close(self) -> None:
        pass


@pytest.mark.parametrize("tool, args, phrase", [
    ("list_gates", {}, "does not support gates yet"),
    ("approve_gate", {"run_id": "r", "gate_id": "g"}, "does not support gates yet"),
    ("reject_gate", {"run_id": "r", "gate_id": "g", "reason": "no"}, "does not support gates yet"),
    ("agent_run", {"agent_run_id": "x"}, "does not support agent runs yet"),
    ("agent_run", {}, "does not support agent runs yet"),
])
def test_missing_client_features_are_tool_errors_not_crashes(tool, args, phrase):
    tools = TitanTools("tcp://127.0.0.1:1", timeout=0.2)
    tools._client = NoFeatures()  # type: ignore[assignment]
    server = build(tools)

    async def call():
        return await server._handle_call_tool(None, _params(tool, args))  # what a request reaches

    result = anyio.run(call)
    assert result.is_error and phrase in result.content[0].text, result


def test_every_tool_has_a_description_and_an_object_result():
    server = build(TitanTools("tcp://127.0.0.1:1"))
    tools = anyio.run(server.list_tools)
    assert [t.name for t in tools] == list(TOOLS)
    for t in tools:
        assert t.description and t.output_schema and t.output_schema["type"] == "object", t.name
    dag = next(t for t in tools if t.name == "submit_dag")
    job = dag.input_schema["$defs"]["McpJob"]["properties"]
    assert {"script", "file", "depends_on", "hitl_message"} <= set(job), json.dumps(job)[:300]


def _params(name, args):
    from mcp_types import CallToolRequestParams

    return CallToolRequestParams(name=name, arguments=args)


class WithFeatures(NoFeatures):
    """A client with the gates change's methods, recording how the tools call them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name):
        if name not in ("gates", "approve", "reject", "agent_run", "agent_runs"):
            raise AttributeError(name)
        real = inspect.signature(getattr(TitanClient, name))

        def call(*args: Any, **kwargs: Any) -> Any:
            real.bind(None, *args, **kwargs)  # the tool calls the client method as the client spells it
            self.calls.append((name, args, kwargs))
            return [{"id": "g"}]
        return call


def test_gate_and_agent_run_tools_forward_to_the_client_methods():
    tools = TitanTools("tcp://127.0.0.1:1")
    client = tools._client = WithFeatures()  # type: ignore[assignment]
    assert tools.list_gates() == {"gates": [{"id": "g"}]}
    tools.list_gates("r1")
    assert tools.approve_gate("r1", "hitl-gate-a", comment="ok", user="ann") == {"result": [{"id": "g"}]}
    tools.reject_gate("r1", "hitl-gate-a", reason="no")
    tools.agent_run("ag")
    assert tools.agent_run() == {"agent_runs": [{"id": "g"}]}
    user = client.calls[3][2]["by"]
    assert client.calls == [
        ("gates", (), {}), ("gates", ("r1",), {}),
        ("approve", ("r1", "hitl-gate-a"), {"comment": "ok", "by": "ann"}),
        ("reject", ("r1", "hitl-gate-a"), {"reason": "no", "by": user}),
        ("agent_run", ("ag",), {}), ("agent_runs", (), {}),
    ]
    assert user.startswith("mcp")
