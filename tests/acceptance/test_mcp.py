"""`titan mcp` driven over stdio by the `mcp` client library, as an MCP client (an agent's host) would,
against live clusters."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from client.api import TitanClient
from tests.helpers import REPO, port_guess, reserved_port, wait_until

pytestmark = pytest.mark.timeout(150)

TITAN_MCP = [sys.executable, "-m", "client.cli", "mcp"]
HAS_GATES = all(hasattr(TitanClient, m) for m in ("gates", "approve", "reject"))
HAS_AGENT_RUNS = all(hasattr(TitanClient, m) for m in ("agent_run", "agent_runs"))

STEP_PY = """\
import os
print("step", os.environ["TITAN_JOB_ID"], "of", os.environ["TITAN_RUN_ID"])
print("second line")
"""
REPORT_SH = """\
echo "report for $TITAN_RUN_ID"
"""


@asynccontextmanager
async def mcp_session(broker: str, stderr: Path, **env: str) -> AsyncIterator[ClientSession]:
    """A session with a `titan mcp --broker BROKER` child process (killed on the way out)."""
    params = StdioServerParameters(
        command=TITAN_MCP[0], args=[*TITAN_MCP[1:], "--broker", broker], cwd=str(REPO),
        env={"PYTHONPATH": str(REPO), **{k: v for k, v in os.environ.items() if k.startswith("TITAN_")}, **env})
    with stderr.open("a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=60) as session:
                await session.initialize()
                yield session


def drive(broker: str, tmp_path: Path, scenario: Callable[[ClientSession], Awaitable[Any]],
          timeout: float = 120, **env: str) -> Any:
    """Run ``scenario`` against a fresh `titan mcp`, all of it within ``timeout`` seconds; the server's
    stderr is shown if it fails."""
    stderr = tmp_path / "mcp-stderr.log"

    async def main() -> Any:
        with anyio.fail_after(timeout):
            async with mcp_session(broker, stderr, **env) as session:
                return await scenario(session)

    try:
        return anyio.run(main)
    except BaseException:
        print("titan mcp stderr:\n" + (stderr.read_text() if stderr.exists() else "(none)"))
        raise


async def call(session: ClientSession, tool: str, **args: Any) -> dict[str, Any]:
    """A tool's JSON result; fails the test, with the tool's message, if the call failed."""
    result = await session.call_tool(tool, args)
    assert not result.is_error, f"{tool} failed: {result.content}"
    doc = result.structured_content
    assert isinstance(doc, dict), result
    assert json.loads(result.content[0].text) == doc  # the text a model reads is the same JSON
    return doc


async def call_error(session: ClientSession, tool: str, **args: Any) -> str:
    """The message of a tool call that must fail."""
    result = await session.call_tool(tool, args)
    assert result.is_error, f"{tool} should have failed: {result.structured_content}"
    text = result.content[0].text
    assert "Traceback" not in text
    return text


def test_tools_are_listed_and_a_dag_of_written_scripts_runs_and_can_be_read(cluster, tmp_path):
    async def scenario(s: ClientSession) -> None:
        names = {t.name for t in (await s.list_tools()).tools}
        assert {"ping", "submit_job", "submit_dag", "submit_yaml", "run_status", "job_status", "job_logs",
                "list_runs", "list_workers", "cancel", "list_gates", "approve_gate", "reject_gate", "store_get",
                "store_put", "upload_file", "stats", "agent_run"} <= names
        assert (await call(s, "ping"))["broker"] == cluster.broker_addr
        assert len((await call(s, "list_workers"))["workers"]) == 2
        # scripts given as content: the server does not write them anywhere, the workers get them inline
        run = await call(s, "submit_dag", name="mcp-dag", agent_run_id="agent-1", jobs=[
            {"id": "prep", "script": STEP_PY, "file": "step.py"},
            {"id": "fan", "script": STEP_PY, "file": "step.py", "depends_on": ["prep"], "args": ["x"]},
            {"id": "report", "script": REPORT_SH, "file": "report.sh", "parents": ["fan"]},
        ])
        run_id = run["run_id"]
        assert run["jobs"] == ["prep", "fan", "report"]
        st = await call(s, "run_status", run_id=run_id, wait_seconds=60)
        assert st["state"] == "SUCCEEDED", st
        assert {j["state"] for j in st["jobs"].values()} == {"COMPLETED"}
        job = await call(s, "job_status", run_id=run_id, job_id="report")
        assert job["state"] == "COMPLETED" and job["exit_code"] == 0 and job["run_state"] == "SUCCEEDED"
        logs = await call(s, "job_logs", run_id=run_id, job_id="prep")
        assert logs["lines"] == [f"step prep of {run_id}", "second line"] and logs["next_offset"] is None
        page = await call(s, "job_logs", run_id=run_id, job_id="fan", offset=1, limit=1)
        assert page["lines"] == ["second line"] and page["next_offset"] is None
        first = await call(s, "job_logs", run_id=run_id, job_id="fan", limit=1)
        assert first["lines"] == [f"step fan of {run_id}"] and first["next_offset"] == 1
        runs = (await call(s, "list_runs", agent_run_id="agent-1"))["runs"]
        assert [r["run_id"] for r in runs] == [run_id]
        # resources: the same state for an agent that reads rather than calls
        templates = {t.uri_template for t in (await s.list_resource_templates()).resource_templates}
        assert {"titan://runs/{run_id}", "titan://runs/{run_id}/logs/{job_id}"} <= templates
        doc = json.loads((await s.read_resource(f"titan://runs/{run_id}")).contents[0].text)
        assert doc["run_id"] == run_id and doc["state"] == "SUCCEEDED"
        text = (await s.read_resource(f"titan://runs/{run_id}/logs/report")).contents[0].text
        assert text == f"report for {run_id}\n"

    drive(cluster.broker_addr, tmp_path, scenario)


def test_submit_job_yaml_store_and_upload(cluster, tmp_path):
    (tmp_path / "hello.py").write_text("print('hello from a file on the MCP host')\n")
    pipeline = """
name: mcp-yaml
jobs:
  - id: hello
    file: hello.py
  - id: after
    command: [echo, after]
    depends_on: [hello]
"""

    async def scenario(s: ClientSession) -> None:
        one = await call(s, "submit_job", script="print('solo')\n", file="solo.py", priority=3, env={"A": "1"})
        assert (await call(s, "run_status", run_id=one["run_id"], wait_seconds=60))["state"] == "SUCCEEDED"
        assert (await call(s, "job_logs", run_id=one["run_id"], job_id="job"))["lines"] == ["solo"]
        run = await call(s, "submit_yaml", yaml_text=pipeline, base_dir=str(tmp_path))
        assert (await call(s, "run_status", run_id=run["run_id"], wait_seconds=60))["state"] == "SUCCEEDED"
        logs = await call(s, "job_logs", run_id=run["run_id"], job_id="hello")
        assert logs["lines"] == ["hello from a file on the MCP host"]
        by_path = await call(s, "submit_yaml", path=str(REPO / "pipelines" / "diamond" / "diamond.yaml"))
        assert (await call(s, "run_status", run_id=by_path["run_id"], wait_seconds=60))["state"] == "SUCCEEDED"
        assert "invalid YAML" in await call_error(s, "submit_yaml", yaml_text="name: [x\n")
        assert "either path or yaml_text" in await call_error(s, "submit_yaml")
        await call(s, "store_put", key="mcp/answer", value="42")
        assert await call(s, "store_get", key="mcp/answer") == {"key": "mcp/answer", "found": True, "value": "42"}
        assert (await call(s, "store_get", key="mcp/none"))["found"] is False
        up = await call(s, "upload_file", name="notes.txt", content="some notes\n")
        assert up == {"name": "notes.txt", "size": 11}
        assert (await call(s, "stats"))["workers"] == 2

    drive(cluster.broker_addr, tmp_path, scenario)
    with TitanClient(cluster.broker_addr) as c:
        assert c.fetch_artifact("notes.txt") == b"some notes\n"


def test_cancel_a_run(cluster, tmp_path):
    async def scenario(s: ClientSession) -> None:
        run = await call(s, "submit_dag", name="mcp-cancel", jobs=[
            {"id": "long", "command": ["sleep", "60"]}, {"id": "next", "command": ["true"], "depends_on": ["long"]}])
        with anyio.fail_after(30):
            while (await call(s, "job_status", run_id=run["run_id"], job_id="long"))["state"] != "RUNNING":
                await anyio.sleep(0.1)
        out = await call(s, "cancel", run_id=run["run_id"])
        assert out["state"] == "CANCELLED" and set(out["cancelled"]) == {"long", "next"}
        st = await call(s, "run_status", run_id=run["run_id"], wait_seconds=30)
        assert st["state"] == "CANCELLED" and st["jobs"]["long"]["state"] == "CANCELLED"

    drive(cluster.broker_addr, tmp_path, scenario)


def test_bad_jobs_and_unknown_runs_are_tool_errors_with_the_validators_message(cluster, tmp_path):
    async def scenario(s: ClientSession) -> None:
        msg = await call_error(s, "submit_dag", name="bad", jobs=[{"id": "a", "command": ["true"], "priority": 2**40}])
        assert "jobs[0].priority: expected integer from" in msg, msg
        msg = await call_error(s, "submit_dag", name="bad", jobs=[{"id": "a", "script": "print(1)"}])
        assert "a script needs `file`" in msg, msg
        # checked by the broker: a cycle
        msg = await call_error(s, "submit_dag", name="bad", jobs=[
            {"id": "a", "command": ["true"], "depends_on": ["b"]}, {"id": "b", "command": ["true"], "depends_on": ["a"]}])
        assert "cycle between jobs" in msg, msg
        msg = await call_error(s, "run_status", run_id="no-such-run")
        assert "no-such-run" in msg, msg
        with pytest.raises(Exception, match="no-such-run"):
            await s.read_resource("titan://runs/no-such-run")
        assert (await call(s, "ping"))["broker"]  # the server is still fine after all that

    drive(cluster.broker_addr, tmp_path, scenario)


def test_a_wrong_broker_address_is_a_tool_error_naming_it(tmp_path):
    with reserved_port() as port:
        wrong = f"tcp://127.0.0.1:{port}"

        async def scenario(s: ClientSession) -> None:
            assert len((await s.list_tools()).tools) >= 18  # the server itself is up
            msg = await call_error(s, "ping")
            assert f"no answer from the broker at {wrong}" in msg, msg
            msg = await call_error(s, "submit_job", command=["true"])
            assert wrong in msg, msg

        drive(wrong, tmp_path, scenario, timeout=60, TITAN_TIMEOUT="1")


@pytest.mark.skipif(not HAS_GATES, reason="needs the gates change (TitanClient.gates/approve/reject)")
def test_approve_and_reject_gates(cluster, tmp_path):
    async def scenario(s: ClientSession) -> None:
        ok = await call(s, "submit_dag", name="gated", jobs=[
            {"id": "a", "command": ["echo", "a"], "hitl_message": "ship it?", "max_wait_seconds": 120},
            {"id": "b", "command": ["echo", "b"], "depends_on": ["a"]}])
        no = await call(s, "submit_dag", name="gated-no", jobs=[
            {"id": "a", "command": ["echo", "a"], "hitl_message": "ship it?", "max_wait_seconds": 120},
            {"id": "b", "command": ["echo", "b"], "depends_on": ["a"]}])
        with anyio.fail_after(30):
            for run in (ok, no):
                while "AWAITING_APPROVAL" not in json.dumps(await call(s, "run_status", run_id=run["run_id"])):
                    await anyio.sleep(0.1)
        pending = json.dumps(await call(s, "list_gates", run_id=ok["run_id"]))
        assert "hitl-gate-a" in pending and "ship it?" in pending, pending
        await call(s, "approve_gate", run_id=ok["run_id"], gate_id="hitl-gate-a", comment="looks good", user="ann")
        st = await call(s, "run_status", run_id=ok["run_id"], wait_seconds=60)
        assert st["state"] == "SUCCEEDED" and st["jobs"]["b"]["state"] == "COMPLETED", st
        decided = json.dumps(await call(s, "list_gates", run_id=ok["run_id"]))
        assert "ann" in decided and "looks good" in decided, decided
        again = await call_error(s, "approve_gate", run_id=ok["run_id"], gate_id="hitl-gate-a")
        assert "hitl-gate-a" in again or "decided" in again, again
        await call(s, "reject_gate", run_id=no["run_id"], gate_id="hitl-gate-a", reason="not today")
        st = await call(s, "run_status", run_id=no["run_id"], wait_seconds=60)
        assert st["state"] == "FAILED" and st["jobs"]["hitl-gate-a"]["state"] == "REJECTED", st
        assert st["jobs"]["b"]["state"] == "SKIPPED", st

    drive(cluster.broker_addr, tmp_path, scenario)


@pytest.mark.skipif(not HAS_AGENT_RUNS, reason="needs the agent runs change (TitanClient.agent_run/agent_runs)")
def test_agent_run_groups_the_runs_an_agent_submits(cluster, tmp_path):
    async def scenario(s: ClientSession) -> None:
        ids = []
        for i in range(2):
            run = await call(s, "submit_dag", name=f"stage-{i}", agent_run_id="mcp-agent",
                             jobs=[{"id": "s", "script": "print('stage')\n", "file": "s.py"}])
            await call(s, "run_status", run_id=run["run_id"], wait_seconds=60)
            ids.append(run["run_id"])
        doc = json.dumps(await call(s, "agent_run", agent_run_id="mcp-agent"))
        assert doc.index(ids[0]) < doc.index(ids[1]), doc
        assert "mcp-agent" in json.dumps(await call(s, "agent_run"))

    drive(cluster.broker_addr, tmp_path, scenario)


def test_http_transport_serves_the_same_tools_on_loopback(cluster, tmp_path):
    log = tmp_path / "mcp-http.log"
    for _ in range(3):  # a guessed port may be taken meanwhile: try another
        port = port_guess()
        with log.open("w") as out:
            proc = subprocess.Popen([*TITAN_MCP, "--broker", cluster.broker_addr, "--transport", "http",
                                     "--bind", f"127.0.0.1:{port}"], cwd=REPO, stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            if _serving(proc, port):
                assert anyio.run(_ping_over_http, port)["broker"] == cluster.broker_addr
                return
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
    pytest.fail(f"titan mcp --transport http never listened:\n{log.read_text()}")


def _serving(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Whether ``proc`` listens on ``port`` (False: it exited, the port was taken)."""
    wait_until(lambda: proc.poll() is not None or _listening(port), timeout=30, what="titan mcp http")
    return proc.poll() is None


async def _ping_over_http(port: int) -> dict[str, Any]:
    from mcp.client.streamable_http import streamable_http_client

    with anyio.fail_after(60):
        async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=30) as s:
                await s.initialize()
                assert "submit_dag" in {t.name for t in (await s.list_tools()).tools}
                return await call(s, "ping")


def test_http_on_a_public_address_is_refused_without_insecure():
    out = subprocess.run([*TITAN_MCP, "--transport", "http", "--bind", "0.0.0.0:8765"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "refusing to bind" in out.stderr and "--insecure" in out.stderr, out.stderr
    out = subprocess.run([*TITAN_MCP, "--transport", "http", "--bind", "nonsense"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "expected HOST:PORT" in out.stderr, out.stderr


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
