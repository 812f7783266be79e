"""The broker's client-facing requests: submit, add jobs, status, logs, cancel, store, assets."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from titan_zmq import defaults, keys
from titan_zmq.broker import journal
from titan_zmq.broker.assets import Assets
from titan_zmq.broker.blobs import BlobCache
from titan_zmq.broker.commit import GroupCommit
from titan_zmq.broker.logs import LogStore
from titan_zmq.broker.registry import WorkerRegistry
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.errors import InvalidRequest, StoreUnavailable
from titan_zmq.jobspec import JobSpec, check_name, parse_job, parse_jobs
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
        }
        for op in KV_OPS:
            table[op] = self.on_kv
        return table

    # ---- submissions -------------------------------------------------------------------------

    def on_submit_dag(self, identity: bytes, msg: Message) -> bytes:
        jobs = parse_jobs(msg.body.get("jobs"))
        return self._submit(msg, msg.field("name", str, "run"), jobs, msg.field("agent_run_id", OPTIONAL_STR, None))

    def on_submit_job(self, identity: bytes, msg: Message) -> bytes:
        job = parse_job(msg.body.get("job"), "job")
        return self._submit(msg, msg.field("name", str, job.id), [job], msg.field("agent_run_id", OPTIONAL_STR, None))

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
        jobs = parse_jobs(msg.body.get("jobs"))
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
        run_id = msg.field("run_id", OPTIONAL_STR, None)
        run = self.sched.newest_run() if run_id is None else self.sched.run(run_id)
        return reply(msg, run.summary() if msg.field("summary", bool, False) else run.status(), Op.DATA)

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
            "done": rec.state.terminal and nxt >= total,
        }, Op.DATA)

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
