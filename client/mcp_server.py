"""`titan mcp`: an MCP server (the `mcp` package's MCPServer, named "titan") so an LLM agent can drive a
cluster: submit jobs and DAGs whose scripts it wrote, watch them, read logs, cancel, decide approval
gates, use the shared store.

A thin adapter over one :class:`~client.api.TitanClient`. The SDK runs each tool call on a worker thread
and the client is not thread-safe, so calls take turns on a lock. Every result is a JSON object; a
failure is a tool error carrying the titan error's message (``no answer from the broker at tcp://...``,
``jobs[0].priority: expected integer ...``), never a traceback. Scripts travel inside the submission, so
the workers need not share this host's filesystem.

Gate and agent-run tools call client methods another change adds (``gates``, ``approve``, ``reject``,
``agent_run``, ``agent_runs``); with a client that lacks them the tools say so as a tool error.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from pydantic import Field

from client import pipeline
from client.api import TERMINAL_RUN, TitanClient
from client.connection import broker_address
from client.mcp_jobs import McpJob, from_wire, to_titan_job, to_titan_jobs
from titan_zmq import defaults
from titan_zmq.errors import NotFound, TitanError

log = logging.getLogger(__name__)

T = TypeVar("T")
Doc = dict[str, Any]
SERVER_NAME = "titan"
INSTRUCTIONS = (
    "Drive a titan-zmq cluster: submit_dag runs jobs whose scripts you write (give `script` and `file`), "
    "run_status and job_logs show progress, cancel stops a run, approve_gate/reject_gate decide approval "
    "gates. Resources titan://runs/{run_id} and titan://runs/{run_id}/logs/{job_id} read the same state.")
WAIT_POLL = 0.5  # seconds between status reads while run_status waits (the lock is free in between)
NO_GATES = "this broker does not support gates yet (the titan client here has no {}())"
NO_AGENT_RUNS = "this broker does not support agent runs yet (the titan client here has no {}())"

RunId = Annotated[str, Field(description="A run id, as submit_* and list_runs return it.")]
JobId = Annotated[str, Field(description="A job id within the run.")]


def jsonable(value: Any) -> Any:
    """``value`` with bytes made text (UTF-8, else base64 under a marker) and tuples made lists."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    return value


class TitanTools:
    """The tools (the methods named in ``TOOLS``) and resources (``*_resource``), registered by :func:`build`."""

    def __init__(self, broker: str | None = None, timeout: float | None = None, base_dir: str | Path | None = None):
        self.address = broker_address(broker)
        self.timeout = timeout
        self.base_dir = Path(base_dir or ".")
        self._client: TitanClient | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _locked(self, fn: Callable[[TitanClient], T]) -> T:
        """``fn(client)`` under the lock (the client is made at the first call)."""
        with self._lock:
            if self._client is None:
                self._client = TitanClient(self.address, self.timeout)
            return fn(self._client)

    def _call(self, fn: Callable[[TitanClient], T]) -> T:
        """``fn(client)``, a TitanError turned into a ToolError with its message."""
        try:
            return self._locked(fn)
        except TitanError as exc:
            raise ToolError(str(exc)) from None

    def _feature(self, name: str, missing: str, *args: Any, **kwargs: Any) -> Any:
        """Call the client's method ``name``, or fail with ``missing`` when this client has none."""
        def call(client: TitanClient) -> Any:
            method = getattr(client, name, None)
            if not callable(method):
                raise ToolError(missing.format(name))
            return method(*args, **kwargs)
        return self._call(call)

    # ---- cluster -------------------------------------------------------------------------------

    def ping(self) -> Doc:
        """Check that the broker answers; tells its address and those of its event socket and store."""
        return {"broker": self.address, **jsonable(self._call(lambda c: c.ping()))}

    def stats(self) -> Doc:
        """Broker counters: workers, runs, jobs by state, refused frames, store health."""
        return jsonable(self._call(lambda c: c.stats()))  # type: ignore[no-any-return]

    def list_workers(self) -> Doc:
        """The registered workers: id, host, capabilities, slots and the jobs each runs."""
        return {"workers": jsonable(self._call(lambda c: c.workers()))}

    # ---- submitting ----------------------------------------------------------------------------

    def submit_job(
        self,
        script: Annotated[str | None, Field(description="The script's content (give `file` to name it).")] = None,
        file: Annotated[str | None, Field(description=(
            "The script's name; its suffix picks the interpreter (.py Python, .sh bash). Without `script`: "
            "a file on the MCP server's host, shipped with the job."))] = None,
        command: Annotated[list[str] | str | None, Field(description="An argv to run instead of a script.")] = None,
        args: Annotated[list[str] | str | None, Field(description="Arguments.")] = None,
        requirement: Annotated[str | None, Field(description="Capability tag (default GENERAL).")] = None,
        priority: Annotated[int | None, Field(description="Higher runs first (default 0).")] = None,
        env: Annotated[dict[str, str] | None, Field(description="Extra environment variables.")] = None,
        retries: Annotated[int | None, Field(description="Retries after a failure (default 3).")] = None,
        timeout: Annotated[float | None, Field(description="Seconds before it is killed.")] = None,
        job_id: Annotated[str, Field(description="The job's id (also the run's name).")] = "job",
    ) -> Doc:
        """Submit one job (a script you wrote, or a command) as a run of its own; returns the run id."""
        job = _job(id=job_id, script=script, file=file, command=command, args=args,
                     requirement=requirement, priority=priority, env=env, retries=retries, timeout=timeout)
        titan_job = self._convert(lambda: to_titan_job(job, self.base_dir))
        run = self._call(lambda c: c.submit_job(titan_job))
        return {"run_id": run.run_id, "jobs": run.job_ids}

    def submit_dag(
        self,
        name: Annotated[str, Field(description="The run's name.")],
        jobs: Annotated[list[McpJob], Field(description="The jobs; `depends_on` makes the DAG.")],
        agent_run_id: Annotated[str | None, Field(description="Groups this run with others of one agent run.")] = None,
    ) -> Doc:
        """Submit jobs as one run (a DAG through their `depends_on`); scripts travel with the jobs.

        A job with `hitl_message` is followed by an approval gate (`hitl-gate-<job id>`) on brokers that
        have gates; decide it with approve_gate or reject_gate."""
        titan_jobs = self._convert(lambda: to_titan_jobs(jobs, self.base_dir))
        run = self._call(lambda c: c.submit_dag(name, titan_jobs, agent_run_id=agent_run_id))
        return {"run_id": run.run_id, "jobs": run.job_ids}

    def submit_yaml(
        self,
        path: Annotated[str | None, Field(description="A YAML pipeline on the MCP server's host.")] = None,
        yaml_text: Annotated[str | None, Field(description=(
            "A YAML pipeline's text; its `file:` entries are read relative to `base_dir`."))] = None,
        base_dir: Annotated[str | None, Field(description="Where yaml_text's scripts are (default: the "
                                                          "MCP server's working directory).")] = None,
        agent_run_id: Annotated[str | None, Field(description="Groups this run with others.")] = None,
    ) -> Doc:
        """Submit a YAML pipeline (the `titan run` format), given as a path or as text."""
        if (path is None) == (yaml_text is None):
            raise ToolError("give either path or yaml_text")
        if path is not None:
            full = self.base_dir / path
            run = self._call(lambda c: c.submit_yaml(full, agent_run_id=agent_run_id))
            return {"run_id": run.run_id, "jobs": run.job_ids}
        if yaml_text is None:  # checked above; says so to mypy without an assert
            raise ToolError("give either path or yaml_text")
        pipe = self._convert(lambda: _pipeline_from_text(yaml_text, self.base_dir / (base_dir or ".")))
        jobs = self._convert(lambda: [from_wire(job) for job in pipe.jobs])
        run = self._call(lambda c: c.submit_dag(pipe.name, jobs, agent_run_id=agent_run_id or pipe.agent_run_id))
        return {"run_id": run.run_id, "jobs": run.job_ids}

    @staticmethod
    def _convert(fn: Callable[[], T]) -> T:
        """Checks made here (job schema, YAML) fail as tool errors with their message."""
        try:
            return fn()
        except TitanError as exc:
            raise ToolError(str(exc)) from None

    # ---- watching ------------------------------------------------------------------------------

    def run_status(
        self,
        run_id: Annotated[str | None, Field(description="The run (default: the newest).")] = None,
        summary: Annotated[bool, Field(description="Only the number of jobs per state.")] = False,
        wait_seconds: Annotated[float, Field(ge=0, le=600, description=(
            "Wait up to this long for the run to end before answering."))] = 0,
    ) -> Doc:
        """A run's state (RUNNING, SUCCEEDED, FAILED, CANCELLED) and every job's state, attempts, exit
        code, worker and times."""
        deadline = time.monotonic() + wait_seconds
        while True:
            st = self._call(lambda c: c.status(run_id, summary=summary))
            if st.get("state") in TERMINAL_RUN or time.monotonic() >= deadline:
                return jsonable(st)  # type: ignore[no-any-return]
            time.sleep(min(WAIT_POLL, max(0.0, deadline - time.monotonic())))

    def job_status(self, run_id: RunId, job_id: JobId) -> Doc:
        """One job's state, attempts, exit code, worker and times."""
        st = self._call(lambda c: c.status(run_id))
        job = st["jobs"].get(job_id)
        if job is None:
            raise ToolError(f"run {run_id} has no job {job_id!r} (it has: {', '.join(sorted(st['jobs']))})")
        return jsonable({"run_id": st["run_id"], "run_state": st["state"], "job_id": job_id, **job})  # type: ignore[no-any-return]

    def job_logs(
        self,
        run_id: RunId,
        job_id: JobId,
        offset: Annotated[int, Field(ge=0, description="First line to return (0: the first line).")] = 0,
        limit: Annotated[int, Field(ge=1, le=defaults.MCP_MAX_LOG_LINES, description="Lines to return at most.")]
        = defaults.MCP_LOG_LINES,
    ) -> Doc:
        """What a job printed (stdout and stderr, every attempt, in order), `limit` lines from `offset`;
        `next_offset` is where the next page starts (null at the end)."""
        records = self._call(lambda c: c.log_records(run_id, job_id, start=offset))
        page = records[:limit]
        return {"run_id": run_id, "job_id": job_id, "offset": offset, "lines": [jsonable(r[3]) for r in page],
                "next_offset": offset + len(page) if len(records) > limit else None}

    def list_runs(
        self,
        limit: Annotated[int, Field(ge=1, le=defaults.RUNS_PAGE, description="Runs to return at most.")] = 20,
        agent_run_id: Annotated[str | None, Field(description="Only this agent run's runs.")] = None,
    ) -> Doc:
        """Runs, newest first: id, name, state, number of jobs, agent run."""
        return {"runs": jsonable(self._call(lambda c: c.runs(agent_run_id, limit=limit)))}

    def cancel(
        self,
        run_id: RunId,
        job_id: Annotated[str | None, Field(description="One job (and its descendants); default: the whole run.")]
        = None,
    ) -> Doc:
        """Cancel a run, or one job and its descendants; running processes are killed."""
        return jsonable(self._call(lambda c: c.cancel(run_id, job_id)))  # type: ignore[no-any-return]

    # ---- gates and agent runs (client methods of the gates change) -------------------------------

    def list_gates(
        self, run_id: Annotated[str | None, Field(description="Only this run's gates.")] = None,
    ) -> Doc:
        """Approval gates, pending first: message, waiting since, deadline, decision, who, when, comment."""
        args = () if run_id is None else (run_id,)
        return {"gates": jsonable(self._feature("gates", NO_GATES, *args))}

    def approve_gate(
        self,
        run_id: RunId,
        gate_id: Annotated[str, Field(description="The gate's id (hitl-gate-<job> for a job's gate).")],
        comment: Annotated[str | None, Field(description="Recorded with the decision.")] = None,
        user: Annotated[str | None, Field(description="Who decides (default: mcp:<user running titan mcp>).")]
        = None,
    ) -> Doc:
        """Approve a pending gate: it completes and its children run."""
        out = self._feature("approve", NO_GATES, run_id, gate_id, comment=comment, by=user or _default_user())
        return _doc(out)

    def reject_gate(
        self,
        run_id: RunId,
        gate_id: Annotated[str, Field(description="The gate's id.")],
        reason: Annotated[str | None, Field(description="Recorded with the decision.")] = None,
        user: Annotated[str | None, Field(description="Who decides (default: mcp:<user running titan mcp>).")]
        = None,
    ) -> Doc:
        """Reject a pending gate: it ends REJECTED, its descendants are SKIPPED and the run FAILS."""
        out = self._feature("reject", NO_GATES, run_id, gate_id, reason=reason, by=user or _default_user())
        return _doc(out)

    def agent_run(
        self,
        agent_run_id: Annotated[str | None, Field(description="The agent run; leave out to list them all.")]
        = None,
    ) -> Doc:
        """An agent run's stages (its runs, in submission order) with their states and pending gates, or
        with no id every agent run, newest first."""
        if agent_run_id is None:
            return {"agent_runs": jsonable(self._feature("agent_runs", NO_AGENT_RUNS))}
        return _doc(self._feature("agent_run", NO_AGENT_RUNS, agent_run_id))

    # ---- shared store and files ------------------------------------------------------------------

    def store_get(self, key: Annotated[str, Field(description="The key.")]) -> Doc:
        """A key's value in the shared store (text; bytes that are not UTF-8 come as base64)."""
        value = self._call(lambda c: c.store_get(key))
        return {"key": key, "found": value is not None, "value": jsonable(value)}

    def store_put(
        self,
        key: Annotated[str, Field(description="The key.")],
        value: Annotated[str, Field(description="The value (text).")],
        ttl: Annotated[float | None, Field(gt=0, description="Expire after this many seconds.")] = None,
    ) -> Doc:
        """Set a key in the shared store (jobs read it with TitanClient.store_get)."""
        self._call(lambda c: c.store_put(key, value, ttl))
        return {"key": key, "stored": True}

    def upload_file(
        self,
        name: Annotated[str | None, Field(description="The asset's name (default: the file's name).")] = None,
        path: Annotated[str | None, Field(description="A file on the MCP server's host.")] = None,
        content: Annotated[str | None, Field(description="The file's content as text.")] = None,
        content_base64: Annotated[str | None, Field(description="The file's content, base64.")] = None,
    ) -> Doc:
        """Upload a file as a named asset that jobs can fetch (give one of path, content, content_base64)."""
        given = [x for x in (path, content, content_base64) if x is not None]
        if len(given) != 1:
            raise ToolError("give exactly one of path, content, content_base64")
        if path is not None:
            full = self.base_dir / path
            stored = self._call(lambda c: c.upload_file(full, name))
            return {"name": stored, "size": full.stat().st_size}
        if not name:
            raise ToolError("name is required with content or content_base64")
        data = _decode(content, content_base64)
        with tempfile.TemporaryDirectory(prefix="titan-mcp-") as tmp:
            staged = Path(tmp) / "upload"
            staged.write_bytes(data)
            stored = self._call(lambda c: c.upload_file(staged, name))
        return {"name": stored, "size": len(data)}

    # ---- resources -------------------------------------------------------------------------------

    def run_resource(self, run_id: str) -> str:
        """The run's status document (JSON)."""
        return _json_text(self._read(lambda c: c.status(run_id)))

    def log_resource(self, run_id: str, job_id: str) -> str:
        """Every line the job printed."""
        lines = self._read(lambda c: c.logs(run_id, job_id))
        return "".join(f"{line}\n" for line in lines)

    def _read(self, fn: Callable[[TitanClient], T]) -> T:
        """``fn(client)`` for a resource: NotFound is the resource's not-found error, other failures
        resource errors with their message."""
        try:
            return self._locked(fn)
        except NotFound as exc:
            raise ResourceNotFoundError(str(exc)) from None
        except TitanError as exc:
            raise ResourceError(str(exc)) from None


TOOLS = ("ping", "submit_job", "submit_dag", "submit_yaml", "run_status", "job_status", "job_logs", "list_runs",
         "list_workers", "cancel", "list_gates", "approve_gate", "reject_gate", "store_get", "store_put",
         "upload_file", "stats", "agent_run")


def build(tools: TitanTools) -> MCPServer[Any]:
    """The MCP server "titan" with every tool of ``tools`` and the run and log resources."""
    server: MCPServer[Any] = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS, log_level="WARNING")
    for name in TOOLS:
        server.add_tool(getattr(tools, name), name=name)
    server.resource("titan://runs/{run_id}", name="run", mime_type="application/json",
                    description="A run's status document")(tools.run_resource)
    server.resource("titan://runs/{run_id}/logs/{job_id}", name="job-log", mime_type="text/plain",
                    description="Everything a job printed")(tools.log_resource)
    return server


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as a host and a port; ValueError names what is wrong."""
    host, sep, port = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--bind {bind!r}: expected HOST:PORT, e.g. {defaults.MCP_BIND}")
    return host, int(port)


def serve(broker: str | None, transport: Literal["stdio", "http"] = "stdio", bind: str = defaults.MCP_BIND,
          timeout: float | None = None) -> None:
    """Run the server until its client goes away (stdio) or it is stopped (http). The caller has checked
    that ``bind`` may be used (loopback, or --insecure)."""
    tools = TitanTools(broker, timeout)
    server = build(tools)
    try:
        if transport == "stdio":
            server.run("stdio")
        else:
            host, port = parse_bind(bind)
            server.run("streamable-http", host=host, port=port)
    finally:
        tools.close()


def _job(**values: Any) -> McpJob:
    """A model job from tool arguments (those left out take the schema's defaults)."""
    return McpJob(**{k: v for k, v in values.items() if v is not None})


def _pipeline_from_text(text: str, base: Path) -> pipeline.Pipeline:
    """A pipeline from YAML text, checked as `titan run` checks a file; scripts are read under ``base``."""
    try:
        doc = yaml.load(text, Loader=pipeline.StrictLoader)  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ToolError(f"yaml_text:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if isinstance(doc, dict) and doc.get("project"):
        raise ToolError("project: true ships the pipeline's folder: submit it by path, not as yaml_text")
    return pipeline.parse(doc, base)


def _decode(content: str | None, content_base64: str | None) -> bytes:
    if content is not None:
        return content.encode()
    try:
        return base64.b64decode(content_base64 or "", validate=True)
    except binascii.Error as exc:
        raise ToolError(f"content_base64: not base64 ({exc})") from None


def _doc(value: Any) -> Doc:
    """A client method's answer as the tool's JSON object (a list or scalar goes under ``result``)."""
    out = jsonable(value)
    return out if isinstance(out, dict) else {"result": out}


def _default_user() -> str:
    try:
        return f"mcp:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container)
        return "mcp"


def _json_text(value: Any) -> str:
    return json.dumps(jsonable(value), indent=2, sort_keys=True)

