"""`titan`: the command line. Every command takes --broker (or TITAN_BROKER)."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from client.api import TitanClient, default_user
from client.autoscale import parse_pool
from client.cli_base import broker_option, clean_errors, command, emit_json, when
from client.cli_elastic import add_commands, autoscale_options
from client.cluster import LocalCluster
from client.follow import follow_run
from titan_zmq import defaults
from titan_zmq.cli_common import check_exposure
from titan_zmq.errors import TitanError


@click.group()
def main() -> None:
    """titan: submit and watch jobs and DAGs on a titan-zmq cluster."""


def print_status(st: dict[str, Any]) -> None:
    click.echo(f"run {st['run_id']}  {st['state']}")
    click.echo(f"  {'JOB':<24} {'STATE':<18} {'ATT':>3} {'EXIT':>5} {'SECS':>7}  WORKER")
    for job_id, j in st["jobs"].items():
        secs = f"{j['finished_at'] - j['started_at']:.2f}" if j.get("started_at") and j.get("finished_at") else ""
        code = "" if j.get("exit_code") is None else str(j["exit_code"])
        click.echo(f"  {job_id:<24} {j['state']:<18} {j['attempts']:>3} {code:>5} {secs:>7}  {j.get('worker') or ''}")


# ---- cluster ---------------------------------------------------------------------------------


@main.command()
@click.option("--workers", default=2, show_default=True, help="Workers to start.")
@click.option("--slots", default=defaults.SLOTS, show_default=True, help="Slots per worker.")
@click.option("--data-dir", default=".titan", show_default=True, help="Store, logs and workspaces go here.")
@click.option("--base-port", default=defaults.BROKER_PORT, show_default=True,
              help="Broker on P, PUB on P+1, store on P+2, UI on P+3; 0 picks free ports.")
@click.option("--ui/--no-ui", default=True, show_default=True, help="Also serve the web UI on P+3.")
@click.option("--autoscale", "pools", multiple=True, metavar="CAP:MIN:MAX",
              help="Also run `titan autoscale` with this pool (repeatable); the N workers are permanent.")
@autoscale_options
def up(workers: int, slots: int, data_dir: str, base_port: int, ui: bool, pools: tuple[str, ...],
       scale_up_after: float, idle_timeout: float, worker_slots: int) -> None:
    """Start a local cluster (store, broker, N permanent workers, web UI, optionally the autoscaler) until Ctrl-C."""
    for pool in pools:
        try:
            parse_pool(pool)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--autoscale") from None
    scale = [a for p in pools for a in ("--pool", p)]
    if scale:
        scale += ["--scale-up-after", str(scale_up_after), "--idle-timeout", str(idle_timeout),
                  "--worker-slots", str(worker_slots)]
    cluster = LocalCluster(Path(data_dir), base_port=base_port, workers=workers, slots=slots, ui=ui, permanent=True,
                           autoscale=scale)
    stopping = _stop_signals()
    try:
        cluster.start()
        click.echo(f"broker  {cluster.broker_addr}\npub     {cluster.pub_addr}\nstore   {cluster.store_addr}")
        if scale:
            click.echo(f"autoscale {' '.join(pools)}")
        click.echo(f"workers {workers} x {slots} slots; logs in {cluster.data_dir / 'logs'}; Ctrl-C stops")
        click.echo(f"export TITAN_BROKER={cluster.broker_addr}")
        if ui:
            click.echo(f"ui      {cluster.ui_url}")
        while not stopping.is_set():
            for proc in cluster.procs.values():
                if not proc.alive():
                    click.echo(f"warning: {proc.name} exited ({proc.log_path})", err=True)
                    proc.popen = None
            time.sleep(0.5)
    except TitanError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    finally:
        cluster.stop()
        click.echo("cluster stopped")


@main.command()
@click.argument("pipeline", default="pipelines/etl/etl.yaml")
@click.option("--workers", default=2, show_default=True)
@click.option("--data-dir", default=".titan-demo", show_default=True)
@click.option("--keep/--no-keep", default=True, show_default=True,
              help="Keep the cluster and its web UI up after the run, until Ctrl-C (--no-keep: stop at once).")
@clean_errors
def demo(pipeline: str, workers: int, data_dir: str, keep: bool) -> None:
    """Start a throw-away local cluster, run PIPELINE with live logs, show the result, then keep it (and
    the web UI) up until Ctrl-C so the run can be looked at in a browser."""
    with LocalCluster(Path(data_dir), workers=workers, ui=keep) as cluster:
        click.echo(f"cluster up: broker {cluster.broker_addr}, {workers} workers")
        if keep:
            click.echo(f"web UI: {cluster.ui_url}")
        with cluster.client() as c:
            run = c.submit_yaml(pipeline)
            click.echo(f"submitted {pipeline} as run {run.run_id}\n--- live logs ---")
            for job_id, rec in follow_run(c, run.run_id, timeout=300):
                click.echo(f"[{job_id}#{rec[1]}] {rec[3]}")
            st = c.wait(run.run_id, timeout=60)
            click.echo("--- result ---")
            print_status(st)
        if keep:
            click.echo(f"\nopen {cluster.ui_url} to look at the run; Ctrl-C stops the cluster")
            _until_stopped()
    sys.exit(0 if st["state"] == "SUCCEEDED" else 1)


def _stop_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (instead of their default: ending the process at once)."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    return stopping


def _until_stopped() -> None:
    """Block until SIGINT or SIGTERM."""
    stopping = _stop_signals()
    while not stopping.wait(0.2):
        pass


@main.command()
@click.option("--quick", is_flag=True, help="Smaller scenarios (under 3 minutes).")
@click.option("--json", "json_path", default=None, help="Also write the results to this JSON file.")
@click.option("--only", multiple=True, help="Run only these scenarios (repeatable).")
@clean_errors
def bench(quick: bool, json_path: str | None, only: tuple[str, ...]) -> None:
    """Measure titan against the same work run directly with subprocess (own local cluster)."""
    from benchmarks.report import markdown
    from benchmarks.runner import run_bench

    doc = run_bench(quick, json_path, list(only) or None, click.echo)
    click.echo(json.dumps(doc, indent=2))
    click.echo(markdown(doc))


@main.command()
@broker_option
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True,
              envvar="TITAN_MCP_TRANSPORT", show_envvar=True,
              help="stdio: the MCP client starts this command; http: serve streamable HTTP on --bind.")
@click.option("--bind", default=defaults.MCP_BIND, show_default=True, envvar="TITAN_MCP_BIND", show_envvar=True,
              help="HOST:PORT for --transport http (a non-loopback host needs --insecure).")
@click.option("--insecure", envvar="TITAN_INSECURE", show_envvar=True, is_flag=True, default=False,
              help="Allow a non-loopback --bind although the MCP server has no authentication (anyone who "
                   "reaches the port can run jobs; a warning in the log).")
def mcp(broker: str, transport: str, bind: str, insecure: bool) -> None:
    """Serve the cluster to LLM agents over MCP (server "titan": tools to submit, watch, cancel, decide
    gates; resources titan://runs/RUN and titan://runs/RUN/logs/JOB)."""
    from client.mcp_server import parse_bind, serve  # the mcp SDK is a heavy import: only for this command

    if transport == "http":
        try:
            parse_bind(bind)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        check_exposure("titan mcp", [f"http://{bind}"], insecure)
    serve(broker, "http" if transport == "http" else "stdio", bind)


# ---- runs ----------------------------------------------------------------------------------


@command(main, "run")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--wait", "wait_", is_flag=True, help="Wait for the run; exit 0 only if it SUCCEEDED.")
@click.option("--follow", is_flag=True, help="Print every job's output live until the run ends.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the status as JSON: at once after submitting, or the final one with --wait/--follow.")
@click.option("--timeout", type=float, default=None, help="Give up waiting after this many seconds.")
@click.option("--agent-run-id", envvar="TITAN_AGENT_RUN_ID", show_envvar=True, default=None,
              help="Group the run under this agent run (default: the pipeline's agent_run_id, else the job's "
                   "own when run from inside a job).")
def run_cmd(broker: str, pipeline: str, wait_: bool, follow: bool, as_json: bool, timeout: float | None,
            agent_run_id: str | None) -> None:
    """Submit a YAML pipeline; prints the run id."""
    with TitanClient(broker) as c:
        run = c.submit_yaml(pipeline, agent_run_id=agent_run_id or None)
        click.echo(run.run_id, err=as_json)
        if follow:
            for job_id, rec in follow_run(c, run.run_id, timeout=timeout):
                click.echo(f"[{job_id}#{rec[1]}] {rec[3]}", err=as_json)
        if not (wait_ or follow):
            if as_json:  # the submission document (run id, jobs, state), without waiting
                emit_json(run.status())
            return
        st = c.wait(run.run_id, timeout)
        if as_json:
            emit_json(st)
        else:
            print_status(st)
        sys.exit(0 if st["state"] == "SUCCEEDED" else 1)


@command(main)
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True)
def status(broker: str, run_id: str | None, as_json: bool) -> None:
    """The state of a run (default: the newest) and its jobs."""
    with TitanClient(broker) as c:
        st = c.status(run_id)
    emit_json(st) if as_json else print_status(st)


@command(main)
@click.argument("run_id")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the new run; exit 0 only if it SUCCEEDED.")
@click.option("--timeout", type=float, default=None, help="Give up waiting after this many seconds.")
def resubmit(broker: str, run_id: str, wait_: bool, timeout: float | None) -> None:
    """Submit a run's jobs again, unchanged, as a new run; prints the new run id."""
    with TitanClient(broker) as c:
        run = c.resubmit(run_id)
        click.echo(run.run_id)
        if not wait_:
            return
        st = c.wait(run.run_id, timeout)
    print_status(st)
    sys.exit(0 if st["state"] == "SUCCEEDED" else 1)


@command(main)
@click.argument("run_id")
def specs(broker: str, run_id: str) -> None:
    """A run's job specs as JSON (what `titan resubmit` submits again)."""
    with TitanClient(broker) as c:
        emit_json(c.run_specs(run_id))


@command(main)
@click.option("--agent-run-id", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=100, help="Show at most this many runs.")
@click.option("--all", "all_", is_flag=True, help="Show every run the broker keeps (read page by page).")
@click.option("--json", "as_json", is_flag=True)
def runs(broker: str, agent_run_id: str | None, limit: int, all_: bool, as_json: bool) -> None:
    """Known runs, newest first (the newest 100 unless --limit or --all)."""
    with TitanClient(broker) as c:
        items = c.runs(agent_run_id, limit=None if all_ else limit)
    if as_json:
        emit_json(items)
        return
    for r in items:
        click.echo(f"{r['run_id']:<48} {r['state']:<10} {r['jobs']:>5} jobs  {r.get('agent_run_id') or ''}")


@command(main)
@click.option("--json", "as_json", is_flag=True)
def workers(broker: str, as_json: bool) -> None:
    """Registered workers."""
    with TitanClient(broker) as c:
        items = c.workers()
    if as_json:
        emit_json(items)
        return
    for w in items:
        caps = ",".join(w["capabilities"])
        kind = f"{w.get('kind', '')}{' draining' if w.get('draining') else ''}"
        click.echo(f"{w['id']:<28} {w['host']:<16} pid {w['pid']:<7} {caps:<16} {len(w['running'])}/{w['slots']} busy"
                   f"  {kind}")


@command(main)
@click.argument("run_id")
@click.argument("job_id", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing live lines until the job ends.")
def logs(broker: str, run_id: str, job_id: str | None, follow: bool) -> None:
    """Every line a job printed (all attempts, in order). A service: RUN JOB, or its id RUN/JOB."""
    if job_id is None:
        if "/" not in run_id:
            raise click.UsageError("give RUN_ID JOB_ID, or a service id RUN/JOB")
        run_id, job_id = run_id.split("/", 1)
    with TitanClient(broker) as c:
        if follow:
            for rec in c.follow_logs(run_id, job_id):
                click.echo(rec[3])
        else:
            for line in c.logs(run_id, job_id):
                click.echo(line)


@command(main)
@click.argument("run_id")
@click.argument("job_id", required=False)
def cancel(broker: str, run_id: str, job_id: str | None) -> None:
    """Cancel a job (and its descendants) or a whole run."""
    with TitanClient(broker) as c:
        out = c.cancel(run_id, job_id)
    click.echo(f"cancelled {len(out['cancelled'])} job(s): {' '.join(out['cancelled'])}; run {out['state']}")


# ---- approval gates and agent runs ------------------------------------------------------------


def _secs(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s"


@command(main)
@click.option("--run", "run_id", default=None, help="Only this run's gates.")
@click.option("--json", "as_json", is_flag=True)
def gates(broker: str, run_id: str | None, as_json: bool) -> None:
    """Approval gates: those waiting for a decision first, then decided ones (the latest first)."""
    with TitanClient(broker) as c:
        items = c.gates(run_id)
    if as_json:
        emit_json(items)
        return
    if not items:
        click.echo("no gates waiting or decided")
    for g in items:
        click.echo(f"{g['run_id']}  {g['gate_id']}  {g['state']}")
        click.echo(f"    message: {g.get('message') or '-'}")
        if g["decision"] is None:
            click.echo(f"    waiting since {when(g['waiting_since'])}, deadline {when(g['deadline'])}"
                       f" (in {_secs(max(0.0, (g['deadline'] or 0) - time.time()))})")
        else:
            click.echo(f"    {g['decision']} by {g.get('decided_by') or '-'} at {when(g.get('decided_at'))}"
                       f" (waited since {when(g['waiting_since'])})")
            if g.get("comment"):
                click.echo(f"    comment: {g['comment']}")


def _decided(out: dict[str, Any]) -> None:
    click.echo(f"gate {out['gate_id']} of run {out['run_id']}: {out['decision']} by {out['decided_by']}"
               f" ({out['state']}; run {out['run_state']})")


@command(main)
@click.argument("run_id")
@click.argument("gate_id")
@click.option("--comment", default=None, help="Why (kept with the decision).")
@click.option("--as", "by", envvar="TITAN_USER", show_envvar=True, default=None,
              help="Who approves (default: the OS user).")
def approve(broker: str, run_id: str, gate_id: str, comment: str | None, by: str | None) -> None:
    """Approve a waiting gate: its children run."""
    with TitanClient(broker) as c:
        _decided(c.approve(run_id, gate_id, comment=comment, by=by or default_user()))


@command(main)
@click.argument("run_id")
@click.argument("gate_id")
@click.option("--reason", default=None, help="Why (kept with the decision).")
@click.option("--as", "by", envvar="TITAN_USER", show_envvar=True, default=None,
              help="Who rejects (default: the OS user).")
def reject(broker: str, run_id: str, gate_id: str, reason: str | None, by: str | None) -> None:
    """Reject a waiting gate: it ends REJECTED, its descendants SKIPPED, the run FAILED."""
    with TitanClient(broker) as c:
        _decided(c.reject(run_id, gate_id, reason=reason, by=by or default_user()))


@command(main, "agent-runs")
@click.option("--json", "as_json", is_flag=True)
def agent_runs(broker: str, as_json: bool) -> None:
    """Agent runs (runs grouped by agent_run_id), the most recently active first."""
    with TitanClient(broker) as c:
        items = c.agent_runs()
    if as_json:
        emit_json(items)
        return
    for a in items:
        click.echo(f"{a['agent_run_id']:<32} {a['stages']:>3} stages  {a['state']:<10} "
                   f"{when(a['first_activity'])} .. {when(a['last_activity'])}")


@command(main, "agent-run")
@click.argument("agent_run_id")
@click.option("--json", "as_json", is_flag=True)
def agent_run(broker: str, agent_run_id: str, as_json: bool) -> None:
    """One agent run: its stages in submission order, with state, duration and waiting gates."""
    with TitanClient(broker) as c:
        doc = c.agent_run(agent_run_id)
    if as_json:
        emit_json(doc)
        return
    click.echo(f"agent run {doc['agent_run_id']}  {doc['state']}  ({len(doc['stages'])} stages,"
               f" {doc['gates_pending']} gate(s) waiting)")
    for st in doc["stages"]:
        waiting = f"  gates waiting: {' '.join(st['gates_pending'])}" if st["gates_pending"] else ""
        click.echo(f"  {st['stage']:>3}. {st['run_id']:<48} {st['state']:<10} {_secs(st['duration']):>8}{waiting}")


# ---- services ------------------------------------------------------------------------------------


@command(main)
@click.option("--json", "as_json", is_flag=True)
@click.option("--all/--live", "all_", default=True, show_default=True,
              help="Also services of finished runs (--live: only runs still running).")
def services(broker: str, as_json: bool, all_: bool) -> None:
    """Services: id, worker, host, port, state, restarts, uptime, address."""
    with TitanClient(broker) as c:
        items = c.services(include_finished=all_)
    if as_json:
        emit_json(items)
        return
    click.echo(f"{'ID':<56} {'WORKER':<24} {'HOST':<16} {'PORT':>5} {'STATE':<10} {'RST':>3} {'UPTIME':>7}  ADDRESS")
    for s in items:
        click.echo(f"{s['id']:<56} {s.get('worker') or '-':<24} {s.get('host') or '-':<16} {s.get('port') or '-':>5}"
                   f" {s['state']:<10} {s['restarts']:>3} {_secs(s.get('uptime')):>7}  {s.get('address') or '-'}")
        if s.get("error"):
            click.echo(f"    {s['error']}")
        for line in s.get("log_tail") or []:
            click.echo(f"    | {line}")


@command(main, "stop")
@click.argument("service_id")
def stop_cmd(broker: str, service_id: str) -> None:
    """Stop a service for good: SIGTERM to its process group, SIGKILL after its stop_grace."""
    with TitanClient(broker) as c:
        out = c.stop_service(service_id)
    click.echo(f"service {out['id']} {out['state']} (SIGTERM now, SIGKILL after {out['stop_grace']:g}s)")


@command(main, "restart")
@click.argument("service_id")
def restart_cmd(broker: str, service_id: str) -> None:
    """Restart a live service now (not counted as a crash)."""
    with TitanClient(broker) as c:
        out = c.restart_service(service_id)
    click.echo(f"service {out['id']} restarting")


@command(main)
def stats(broker: str) -> None:
    """Broker counters."""
    with TitanClient(broker) as c:
        emit_json(c.stats())


@command(main)
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", default=None, help="Asset name (default: the file name).")
def upload(broker: str, path: str, name: str | None) -> None:
    """Upload a file as a named asset (in pieces; the broker's --max-asset-bytes is the limit)."""
    with TitanClient(broker) as c:
        click.echo(c.upload_file(path, name))


@command(main)
@click.argument("name")
@click.argument("dest", required=False, type=click.Path(dir_okay=False))
def download(broker: str, name: str, dest: str | None) -> None:
    """Download a named asset (or artifact, runs/RUN_ID/NAME) into DEST (default: its base name)."""
    with TitanClient(broker) as c:
        out = c.download_asset(name, dest or Path(name).name)
    click.echo(f"{dest or Path(name).name}  {out['size']} bytes  sha256 {out['sha256']}")


# ---- store -----------------------------------------------------------------------------------


@main.group()
def store() -> None:
    """The shared KV/set store."""


def _show(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


@command(store, "get")
@click.argument("key")
def store_get(broker: str, key: str) -> None:
    with TitanClient(broker) as c:
        value = c.store_get(key)
    if value is None:
        click.echo(f"error: no key {key!r}", err=True)
        sys.exit(1)
    click.echo(_show(value))


@command(store, "set")
@click.argument("key")
@click.argument("value")
@click.option("--ttl", type=float, default=None, help="Expire after this many seconds.")
def store_set(broker: str, key: str, value: str, ttl: float | None) -> None:
    with TitanClient(broker) as c:
        c.store_put(key, value, ttl)


@command(store, "del")
@click.argument("key")
def store_del(broker: str, key: str) -> None:
    with TitanClient(broker) as c:
        click.echo(int(c.store_delete(key)))


@command(store, "incr")
@click.argument("key")
@click.option("--by", type=int, default=1)
def store_incr(broker: str, key: str, by: int) -> None:
    with TitanClient(broker) as c:
        click.echo(c.store_incr(key, by))


@command(store, "sadd")
@click.argument("key")
@click.argument("member")
def store_sadd(broker: str, key: str, member: str) -> None:
    with TitanClient(broker) as c:
        click.echo(c.store_sadd(key, member))


@command(store, "srem")
@click.argument("key")
@click.argument("member")
def store_srem(broker: str, key: str, member: str) -> None:
    with TitanClient(broker) as c:
        click.echo(c.store_srem(key, member))


@command(store, "smembers")
@click.argument("key")
def store_smembers(broker: str, key: str) -> None:
    with TitanClient(broker) as c:
        for m in c.store_smembers(key):
            click.echo(_show(m))


@command(store, "keys")
@click.argument("prefix", default="")
def store_keys(broker: str, prefix: str) -> None:
    with TitanClient(broker) as c:
        for k in c.store_keys(prefix):
            click.echo(k)


add_commands(main)

if __name__ == "__main__":
    main()
