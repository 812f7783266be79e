"""The broker's client-facing requests: submit, add jobs, status, logs, cancel, store, assets."""

from __future__ import annotations

import hashlib
import os
import time
from typing import TYPE_CHECKING, Any

import psutil

from titan_zmq import defaults
from titan_zmq.broker import journal
from titan_zmq.broker.worker_link import field
from titan_zmq.errors import InvalidRequest, NotFound, StoreUnavailable
from titan_zmq.jobspec import JobSpec, parse_job, parse_jobs, validate_dag
from titan_zmq.protocol import Message, Op, reply
from titan_zmq.states import JobState

if TYPE_CHECKING:
    from titan_zmq.broker.server import Broker, Handler

KV_OPS = (
    Op.KV_SET, Op.KV_GET, Op.KV_SADD, Op.KV_SMEMBERS, Op.KV_DEL, Op.KV_INCR, Op.KV_SREM, Op.KV_KEYS,
)


class ClientApi:
    def __init__(self, broker: Broker):
        self.b = broker

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
        name = field(msg, "name", str, "run")
        agent = field(msg, "agent_run_id", (str, type(None)), None)
        return self._submit(msg, name, jobs, agent)

    def on_submit_job(self, identity: bytes, msg: Message) -> bytes:
        job = parse_job(msg.body.get("job"), "job")
        return self._submit(msg, field(msg, "name", str, job.id), [job], field(msg, "agent_run_id", (str, type(None)), None))

    def _need_store(self, what: str) -> None:
        if not self.b.store_available():
            raise StoreUnavailable(f"store unavailable: {what} not accepted (nothing of it will run); retry later")

    def _store_write(self, ops: list[list[Any]], what: str) -> None:
        """One store batch for a client's change; a failure is the client's clear 'not accepted'."""
        try:
            self.b.store.batch(ops)
        except StoreUnavailable as exc:
            self.b.store_down()
            raise StoreUnavailable(f"store unavailable: {what} not accepted (nothing of it will run); "
                                   f"retry later ({exc})") from None

    def _submit(self, msg: Message, name: str, jobs: list[JobSpec], agent: str | None) -> bytes:
        self._need_store("the submission was")
        run_id = self.b.new_run_id(name)
        ops = self._project_ops(msg, jobs) + journal.spec_ops(run_id, jobs)
        now = time.time()
        # specs and first states go to the store in one batch; until it is in, nothing is sent
        self.b.apply(self.b.sched.submit(run_id, name, jobs, now, agent_run_id=agent))
        if not self.b.commit(extra_ops=ops):
            self.b.forget_run(run_id)
            raise StoreUnavailable("store unavailable: the submission was not accepted (nothing of it will run);"
                                   " retry later")
        return reply(msg, {"run_id": run_id, "jobs": [j.id for j in jobs]})

    def on_add_jobs(self, identity: bytes, msg: Message) -> bytes:
        run_id = field(msg, "run_id", str)
        run = self.b.sched.run(run_id)
        jobs = parse_jobs(msg.body.get("jobs"))
        if run.state.terminal:
            raise InvalidRequest(f"run {run_id!r} already finished ({run.state.value}); cannot add jobs")
        validate_dag(jobs, existing=set(run.jobs))
        self._need_store("the added jobs were")
        self._store_write(self._project_ops(msg, jobs) + journal.spec_ops(run_id, jobs, first=len(run.jobs)),
                          "the added jobs were")
        self.b.apply(self.b.sched.add_jobs(run_id, jobs, time.time()))
        self.b.commit()
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
        self.b.link.remember_blob(blob_id, data)
        return [["set", journal.BLOB + blob_id, data, None]]

    # ---- queries -----------------------------------------------------------------------------

    def on_status(self, identity: bytes, msg: Message) -> bytes:
        run_id = field(msg, "run_id", (str, type(None)), None)
        if run_id is None:
            if not self.b.sched.runs:
                raise NotFound("no runs yet")
            run_id = next(reversed(self.b.sched.runs))  # runs are kept in submission order
        run = self.b.sched.run(run_id)
        return reply(msg, run.summary() if field(msg, "summary", bool, False) else run.status(), Op.DATA)

    def on_list_runs(self, identity: bytes, msg: Message) -> bytes:
        agent = field(msg, "agent_run_id", (str, type(None)), None)
        limit = field(msg, "limit", int, 100)
        out: list[dict[str, Any]] = []
        for run_id in reversed(self.b.sched.runs):  # newest first, without sorting every run ever seen
            if len(out) >= limit:
                break
            r = self.b.sched.runs[run_id]
            if agent is not None and r.agent_run_id != agent:
                continue
            out.append(r.summary())
        return reply(msg, {"runs": out}, Op.DATA)

    def on_list_workers(self, identity: bytes, msg: Message) -> bytes:
        out = []
        for conn in self.b.registry.by_name.values():
            slots = self.b.sched.workers.get(conn.name)
            running = sorted([r, j] for r, j, _ in slots.running) if slots else []
            out.append(conn.describe(running))
        return reply(msg, {"workers": out}, Op.DATA)

    def on_get_logs(self, identity: bytes, msg: Message) -> bytes:
        run_id, job_id = field(msg, "run_id", str), field(msg, "job_id", str)
        rec = self.b.sched.job(run_id, job_id)
        start = max(0, field(msg, "start", int, 0))
        limit = min(max(1, field(msg, "limit", int, defaults.LOG_PAGE_LINES)), defaults.LOG_PAGE_LINES)
        lines = self.b.logs.read(run_id, job_id, start, limit)
        nxt = lines[-1][0] + 1 if lines else start
        total = self.b.logs.count(run_id, job_id)
        return reply(msg, {
            "lines": lines, "next": nxt, "total": total, "state": rec.state.value,
            "done": rec.state.terminal and nxt >= total,
        }, Op.DATA)

    def on_stats(self, identity: bytes, msg: Message) -> bytes:
        states: dict[str, int] = {}
        for run in self.b.sched.runs.values():
            for rec in run.jobs.values():
                states[rec.state.value] = states.get(rec.state.value, 0) + 1
        rss = psutil.Process(os.getpid()).memory_info().rss
        return reply(msg, {
            "workers": len(self.b.registry), "runs": len(self.b.sched.runs),
            "runs_running": sum(1 for r in self.b.sched.runs.values() if not r.state.terminal),
            "jobs": states, "queued": states.get(JobState.QUEUED.value, 0),
            "running": states.get(JobState.RUNNING.value, 0), "store_ok": self.b.store_ok,
            "uptime": time.time() - self.b.started_at, "rss_bytes": rss, "pub": self.b.pub_addr,
            **self.b.counters,
        }, Op.DATA)

    # ---- changes -----------------------------------------------------------------------------

    def on_cancel(self, identity: bytes, msg: Message) -> bytes:
        run_id = field(msg, "run_id", str)
        job_id = field(msg, "job_id", (str, type(None)), None)
        run = self.b.sched.run(run_id)
        before = {j: r.state for j, r in run.jobs.items()}
        self.b.apply(self.b.sched.cancel(run_id, job_id, time.time()))
        if not self.b.commit():
            raise StoreUnavailable("store unavailable: the cancel is applied but not yet persisted")
        changed = [j for j, r in run.jobs.items() if r.state is not before[j]]
        return reply(msg, {"run_id": run_id, "cancelled": changed, "state": run.state.value})

    def on_kv(self, identity: bytes, msg: Message) -> bytes:
        body = {k: v for k, v in msg.body.items() if k != "rid"}
        key = body.get("key", body.get("prefix", ""))
        if isinstance(key, str) and key.startswith(journal.RESERVED) and msg.op not in (Op.KV_GET, Op.KV_KEYS, Op.KV_SMEMBERS):
            raise InvalidRequest(f"key {key!r} is reserved for the broker's journal")
        self._need_store("the store request was")
        try:
            out = dict(self.b.store.request(msg.op, body))
        except StoreUnavailable as exc:
            self.b.store_down()
            raise StoreUnavailable(f"store unavailable: the store request was not applied ({exc})") from None
        out.pop("rid", None)
        return reply(msg, out, Op.DATA)

    def on_upload(self, identity: bytes, msg: Message) -> bytes:
        name, data = field(msg, "name", str), field(msg, "data", bytes)
        self.b.store.set(journal.ASSET + name, data)
        return reply(msg, {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})

    def on_fetch(self, identity: bytes, msg: Message) -> bytes:
        name = field(msg, "name", str)
        data = self.b.store.get(journal.ASSET + name)
        if data is None:
            raise NotFound(f"no asset named {name!r}")
        return reply(msg, {"name": name, "data": data}, Op.DATA)

    def on_stop(self, identity: bytes, msg: Message) -> bytes:
        self.b.stop()
        return reply(msg, {"stopping": True})

