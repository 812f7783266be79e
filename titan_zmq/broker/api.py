"""The broker's client-facing requests: submit, add jobs, status, logs, cancel, store, assets."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from titan_zmq import defaults, keys
from titan_zmq.broker import journal, services
from titan_zmq.broker.assets import Assets
from titan_zmq.broker.blobs import BlobCache
from titan_zmq.broker.commit import GroupCommit
from titan_zmq.broker.logs import LogStore
from titan_zmq.broker.registry import WorkerRegistry
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.errors import InvalidRequest, StoreUnavailable
from titan_zmq.jobspec import JobSpec, check_name, expand_gates, parse_job, parse_jobs
from titan_zmq.protocol import Handler, Message, Op, reply
from titan_zmq.store.client import StoreClient

log = logging.getLogger(__name__)

KV_OPS = (
    Op.KV_SET, Op.KV_GET, Op.KV_SADD, Op.KV_SMEMBERS, Op.KV_DEL, Op.KV_INCR, Op.KV_SREM, Op.KV_KEYS,
)
OPTIONAL_STR = (str, type(None))


def new_run_id(name: str) -> str:
    """A unique, readable run id: the name's slug, the time, and a random tail."""
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40].strip("-") or "run"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


class ClientApi:
    """Handles the requests of clients (the library, the CLI, jobs that add jobs, the UI).

    It touches only what a client request needs: the scheduler's submission, cancel and query
    methods, the worker registry (read), the group commit (every change is journaled before the
    reply), the store link for the shared KV and assets, the log store and the project archives.
    """

    def __init__(self, sched: Scheduler, registry: WorkerRegistry, journal: GroupCommit, store: StoreClient,
                 logs: LogStore, blobs: BlobCache, stats: Callable[[], dict[str, Any]], stop: Callable[[], None],
                 assets: Assets | None = None):
        self.sched = sched
        self.assets = assets or Assets(store)
        self.registry = registry
        self.journal = journal
        self.store = store
        self.logs = logs
        self.blobs = blobs
        self.stats = stats
        self.stop = stop

    def handlers(self) -> dict[Op, Handler]:
        table: dict[Op, Handler] = {
            Op.SUBMIT_DAG: self.on_submit_dag,
            Op.SUBMIT_JOB: self.on_submit_job,
            Op.ADD_JOBS: self.on_add_jobs,
            Op.GET_JOB_STATUS: self.on_status,
            Op.LIST_RUNS: self.on_list_runs,
            Op.LIST_WORKERS: self.on_list_workers,
            Op.GET_LOGS: self.on_get_logs,
            Op.CANCEL_JOB: self.on_cancel,
            Op.STATS: self.on_stats,
            Op.UPLOAD_ASSET: self.on_upload,
            Op.FETCH_ASSET: self.on_fetch,
            Op.STOP: self.on_stop,
            Op.LIST_GATES: self.on_list_gates,
            Op.DECIDE_GATE: self.on_decide_gate,
            Op.LIST_AGENT_RUNS: self.on_list_agent_runs,
            Op.GET_AGENT_RUN: self.on_get_agent_run,
            Op.LIST_SERVICES: self.on_list_services,
            Op.STOP_SERVICE: self.on_stop_service,
            Op.RESTART_SERVICE: self.on_restart_service,
        }
        for op in KV_OPS:
            table[op] = self.on_kv
        return table

    # ---- submissions -------------------------------------------------------------------------

    def on_submit_dag(self, identity: bytes, msg: Message) -> bytes:
        jobs = expand_gates(parse_jobs(msg.body.get("jobs")))
        return self._submit(msg, msg.field("name", str, "run"), jobs, msg.field("agent_run_id", OPTIONAL_STR, None))

    def on_submit_job(self, identity: bytes, msg: Message) -> bytes:
        job = parse_job(msg.body.get("job"), "job")
        return self._submit(msg, msg.field("name", str, job.id), expand_gates([job]), msg.field("agent_run_id", OPTIONAL_STR, None))

    def _submit(self, msg: Message, name: str, jobs: list[JobSpec], agent: str | None) -> bytes:
        check_name(name, "name")
        check_name(agent, "agent_run_id")
        if not self.journal.store_available():
            raise StoreUnavailable("store unavailable: the submission was not accepted (nothing of it will run);"
                                   " retry later")
        run_id = new_run_id(name)
        ops = self._project_ops(msg, jobs) + journal.spec_ops(run_id, jobs)
        # specs and first states go to the store in one batch; until it is in, nothing is sent
        self.journal.apply(self.sched.submit(run_id, name, jobs, time.time(), agent_run_id=agent))
        if not self.journal.commit(extra_ops=ops):
            self.journal.forget_run(run_id)
            raise StoreUnavailable("store unavailable: the submission was not accepted (nothing of it will run);"
                                   " retry later")
        return reply(msg, {"run_id": run_id, "jobs": [j.id for j in jobs]})

    def on_add_jobs(self, identity: bytes, msg: Message) -> bytes:
        run_id = msg.field("run_id", str)
        jobs = expand_gates(parse_jobs(msg.body.get("jobs")), self.sched.gated_jobs(run_id))
        run = self.sched.check_new_jobs(run_id, jobs)
        if len(run.jobs) + len(jobs) > defaults.MAX_JOBS_PER_RUN:
            raise InvalidRequest(f"run {run_id} has {len(run.jobs)} jobs: {len(jobs)} more would pass the cap of"
                                 f" {defaults.MAX_JOBS_PER_RUN} jobs per run")
        self.journal.write(self._project_ops(msg, jobs) + journal.spec_ops(run_id, jobs, first=len(run.jobs)),
                           "the added jobs were")
        self.journal.apply(self.sched.add_jobs(run_id, jobs, time.time()))
        self.journal.commit()
        return reply(msg, {"run_id": run_id, "jobs": [j.id for j in jobs]})

    def _project_ops(self, msg: Message, jobs: list[JobSpec]) -> list[list[Any]]:
        """A project archive sent with the submission is stored once, under its sha256."""
        project = msg.body.get("project")
        if project is None:
            return []
        if not isinstance(project, dict) or not isinstance(project.get("data"), bytes):
            raise InvalidRequest("project: expected a map with the archive bytes under 'data'")
        data = project["data"]
        blob_id = hashlib.sha256(data).hexdigest()
        if any(j.project not in (None, blob_id) for j in jobs):
            raise InvalidRequest("project: a job names an archive that is not the one sent")
        self.blobs.remember(blob_id, data)
        return [["set", keys.blob_key(blob_id), data, None]]

    # ---- queries -----------------------------------------------------------------------------

    def on_status(self, identity: bytes, msg: Message) -> bytes:
        """A run's status: every job (or the one ``job_id``), each with its spec when ``specs`` (what
        re-submitting the run takes); or with ``summary``, only its counts of jobs per state."""
        run_id = msg.field("run_id", OPTIONAL_STR, None)
        run = self.sched.newest_run() if run_id is None else self.sched.run(run_id)
        if msg.field("summary", bool, False):
            return reply(msg, run.summary(), Op.DATA)
        job_id = msg.field("job_id", OPTIONAL_STR, None)
        if job_id is not None:
            self.sched.job(run.run_id, job_id)  # NotFound for a job the run does not have
        return reply(msg, run.status(msg.field("specs", bool, False), None if job_id is None else [job_id]), Op.DATA)

    def on_list_runs(self, identity: bytes, msg: Message) -> bytes:
        """A page of runs, newest first: at most ``limit`` (capped by RUNS_PAGE), submitted before the run
        ``before``; ``next`` is the cursor of the following page (None after the last)."""
        limit = min(max(1, msg.field("limit", int, 100)), defaults.RUNS_PAGE)
        runs = self.sched.recent_runs(limit, msg.field("agent_run_id", OPTIONAL_STR, None),
                                      msg.field("before", OPTIONAL_STR, None))
        nxt = runs[-1].run_id if len(runs) == limit else None
        return reply(msg, {"runs": [r.summary() for r in runs], "next": nxt}, Op.DATA)

    def on_list_workers(self, identity: bytes, msg: Message) -> bytes:
        out = [{**conn.describe([[k.run_id, k.job_id] for k in self.sched.running_on(conn.name)]),
                "draining": self.sched.draining(conn.name)} for conn in self.registry.by_name.values()]
        return reply(msg, {"workers": out}, Op.DATA)

    def on_get_logs(self, identity: bytes, msg: Message) -> bytes:
        run_id, job_id = msg.field("run_id", str), msg.field("job_id", str)
        rec = self.sched.job(run_id, job_id)
        start = max(0, msg.field("start", int, 0))
        limit = min(max(1, msg.field("limit", int, defaults.LOG_PAGE_LINES)), defaults.LOG_PAGE_LINES)
        lines = self.logs.read(run_id, job_id, start, limit)
        nxt = lines[-1][0] + 1 if lines else start
        total = self.logs.count(run_id, job_id)
        return reply(msg, {
            "lines": lines, "next": nxt, "total": total, "state": rec.state.value,
            "done": rec.terminal and nxt >= total,
        }, Op.DATA)

    def on_list_gates(self, identity: bytes, msg: Message) -> bytes:
        limit = min(max(1, msg.field("limit", int, defaults.GATES_PAGE)), defaults.GATES_PAGE)
        return reply(msg, {"gates": self.sched.gates_list(msg.field("run_id", OPTIONAL_STR, None), limit)}, Op.DATA)

    def on_list_agent_runs(self, identity: bytes, msg: Message) -> bytes:
        limit = min(max(1, msg.field("limit", int, defaults.AGENT_RUNS_PAGE)), defaults.AGENT_RUNS_PAGE)
        return reply(msg, {"agent_runs": self.sched.agent_runs(limit)}, Op.DATA)

    def on_get_agent_run(self, identity: bytes, msg: Message) -> bytes:
        return reply(msg, self.sched.agent_run(msg.field("agent_run_id", str), time.time()), Op.DATA)

    def on_stats(self, identity: bytes, msg: Message) -> bytes:
        return reply(msg, self.stats(), Op.DATA)

    # ---- changes -----------------------------------------------------------------------------

    def on_cancel(self, identity: bytes, msg: Message) -> bytes:
        run_id = msg.field("run_id", str)
        job_id = msg.field("job_id", OPTIONAL_STR, None)
        run = self.sched.run(run_id)
        before = {j: r.state for j, r in run.jobs.items()}
        self.journal.apply(self.sched.cancel(run_id, job_id, time.time()))
        if not self.journal.commit():
            raise StoreUnavailable("store unavailable: the cancel is applied but not yet persisted")
        changed = [j for j, r in run.jobs.items() if r.state is not before[j]]
        return reply(msg, {"run_id": run_id, "cancelled": changed, "state": run.state.value})

    def on_decide_gate(self, identity: bytes, msg: Message) -> bytes:
        """Approve or reject a waiting gate; the reply comes only once the decision is journaled, so an
        acknowledged decision survives a broker crash."""
        run_id, gate_id = msg.field("run_id", str), msg.field("gate_id", str)
        decision = msg.field("decision", str)
        if decision not in ("approve", "reject"):
            raise InvalidRequest(f"decision: expected approve or reject, got {decision[:40]!r}")
        by = msg.field("by", str)
        comment = msg.field("comment", OPTIONAL_STR, None) or None
        check_name(by, "by")
        check_name(comment, "comment", defaults.MAX_TEXT_CHARS)
        if not self.journal.store_available():
            raise StoreUnavailable("store unavailable: the decision was not taken (the gate still waits); retry later")
        self.journal.apply(self.sched.decide_gate(run_id, gate_id, decision == "approve", by, comment, time.time()))
        if not self.journal.commit():
            raise StoreUnavailable("store unavailable: the decision is taken but not yet persisted (it will be"
                                   " once the store is back)")
        rec = self.sched.job(run_id, gate_id)
        return reply(msg, {"run_id": run_id, "run_state": self.sched.run(run_id).state.value, **rec.gate_view()})

    # ---- services ------------------------------------------------------------------------------

    def on_list_services(self, identity: bytes, msg: Message) -> bytes:
        """Every known service (``all``: false leaves out those whose run has finished); a FAILED one
        carries the tail of its log."""
        now = time.time()
        everything = msg.field("all", bool, True)
        out = []
        for rec in self.sched.services():
            if not everything and self.sched.run(rec.run_id).state.terminal:
                continue
            conn = self.registry.by_name.get(rec.worker) if rec.worker else None
            row = services.view(rec, conn.host if conn else None, now)
            if rec.terminal and rec.state.value == "FAILED":
                row["log_tail"] = self._log_tail(rec.run_id, rec.spec.id)
            out.append(row)
        return reply(msg, {"services": out}, Op.DATA)

    def _log_tail(self, run_id: str, job_id: str, lines: int = 20) -> list[str]:
        total = self.logs.count(run_id, job_id)
        return [str(line[3]) for line in self.logs.read(run_id, job_id, max(0, total - lines), lines)]

    def on_stop_service(self, identity: bytes, msg: Message) -> bytes:
        return self._service_change(msg, self.sched.stop_service)

    def on_restart_service(self, identity: bytes, msg: Message) -> bytes:
        return self._service_change(msg, self.sched.restart_service)

    def _service_change(self, msg: Message, change: Callable[[str, str, float], list[Any]]) -> bytes:
        rec = services.resolve(msg.field("service", str), self.sched.services())
        self.journal.apply(change(rec.run_id, rec.spec.id, time.time()))
        if not self.journal.commit():
            raise StoreUnavailable("store unavailable: the change is applied but not yet persisted")
        return reply(msg, {"id": services.service_id(rec.run_id, rec.spec.id), "state": rec.state.value,
                           "stop_grace": rec.spec.stop_grace})

    def on_kv(self, identity: bytes, msg: Message) -> bytes:
        """The shared KV and sets, passed on to the store (which refuses writes to the journal's keys)."""
        body = {k: v for k, v in msg.body.items() if k not in ("rid", "journal")}  # a client never writes the journal
        if not self.journal.store_available():
            raise StoreUnavailable("store unavailable: the store request was not accepted; retry later")
        try:
            out = dict(self.store.request(msg.op, body))
        except StoreUnavailable as exc:
            self.journal.store_down()
            raise StoreUnavailable(f"store unavailable: the store request was not applied ({exc})") from None
        out.pop("rid", None)
        return reply(msg, out, Op.DATA)

    def on_upload(self, identity: bytes, msg: Message) -> bytes:
        """One piece of an upload (or a whole small asset): see :mod:`.assets`."""
        return reply(msg, self.assets.upload(msg))

    def on_fetch(self, identity: bytes, msg: Message) -> bytes:
        return reply(msg, self.assets.fetch(msg), Op.DATA)

    def on_stop(self, identity: bytes, msg: Message) -> bytes:
        conn = self.registry.by_identity.get(identity)
        log.warning("STOP requested by %s (connection %s): stopping", f"worker {conn.name}" if conn else "a client",
                    identity.hex())
        self.stop()
        return reply(msg, {"stopping": True})
