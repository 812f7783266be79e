"""`titan schedule …`, `titan schedules`, `titan worker drain|stop|launch` and `titan autoscale`."""

from __future__ import annotations

from typing import Any

import click

from client.api import TitanClient
from client.autoscale import Autoscaler, Controller, parse_pool
from client.cli_base import broker_option, clean_errors, command, emit_json, when
from titan_zmq import defaults
from titan_zmq.cli_common import on_stop_signals, setup_logging


def pool_option(fn: Any) -> Any:
    return click.option("--pool", "pools", multiple=True, required=True, metavar="CAP:MIN:MAX",
                        help="A pool to scale, e.g. GENERAL:1:4 (repeatable).")(fn)


def autoscale_options(fn: Any) -> Any:
    """The controller's tunables, shared by `titan autoscale` and `titan up --autoscale`."""
    for opt in reversed([
        click.option("--scale-up-after", type=click.FloatRange(min=0), default=defaults.SCALE_UP_AFTER,
                     show_default=True, envvar="TITAN_SCALE_UP_AFTER", show_envvar=True,
                     help="Launch once jobs waited this many seconds with no free slot."),
        click.option("--idle-timeout", type=click.FloatRange(min=0), default=defaults.IDLE_TIMEOUT,
                     show_default=True, envvar="TITAN_IDLE_TIMEOUT", show_envvar=True,
                     help="Drain an ephemeral worker idle this many seconds (never below a pool's min)."),
        click.option("--worker-slots", type=click.IntRange(min=1), default=defaults.SLOTS, show_default=True,
                     envvar="TITAN_AUTOSCALE_SLOTS", show_envvar=True, help="Slots of each launched worker."),
    ]):
        fn = opt(fn)
    return fn


def add_commands(main: click.Group) -> None:
    """Register this module's commands on the `titan` group."""
    main.add_command(schedule)
    main.add_command(schedules_cmd)
    main.add_command(worker)
    main.add_command(autoscale)


# ---- schedules ---------------------------------------------------------------------------------


@click.group()
def schedule() -> None:
    """Cron schedules of pipelines, owned by the broker."""


@command(schedule, "add")
@click.argument("pipeline", type=click.Path(exists=True, dir_okay=False))
@click.option("--cron", default=None, help="Cron expression (overrides the pipeline's schedule.cron; 6 fields: "
                                           "seconds last).")
@click.option("--name", default=None, help="Schedule name (default: the pipeline's name).")
@click.option("--timezone", default=None, help="Time zone of the cron (default UTC).")
@click.option("--catchup", type=click.Choice(["none", "last", "all"]), default=None,
              help="Ticks missed while the broker was down: none, the newest (default) or all run.")
@click.option("--overlap", type=click.Choice(["skip", "allow", "queue"]), default=None,
              help="A tick while the previous run runs: skip it (default), run anyway, or queue it.")
@click.option("--json", "as_json", is_flag=True)
def schedule_add(broker: str, pipeline: str, cron: str | None, name: str | None, timezone: str | None,
                 catchup: str | None, overlap: str | None, as_json: bool) -> None:
    """Schedule PIPELINE (its `schedule:` block, or --cron); the pipeline is stored with the schedule."""
    with TitanClient(broker) as c:
        s = c.add_schedule(pipeline, cron=cron, name=name, timezone=timezone, catchup=catchup, overlap=overlap)
    if as_json:
        emit_json(s)
    else:
        click.echo(f"schedule {s['name']}: {s['cron']} ({s['timezone']}); next {when(s['next_fire'])}")


@command(schedule, "pause")
@click.argument("name")
def schedule_pause(broker: str, name: str) -> None:
    """Stop firing NAME (ticks that pass meanwhile never run)."""
    with TitanClient(broker) as c:
        c.pause_schedule(name)
    click.echo(f"schedule {name} paused")


@command(schedule, "resume")
@click.argument("name")
def schedule_resume(broker: str, name: str) -> None:
    """Fire NAME again from its next tick."""
    with TitanClient(broker) as c:
        s = c.resume_schedule(name)
    click.echo(f"schedule {name} resumed; next {when(s['next_fire'])}")


@command(schedule, "remove")
@click.argument("name")
def schedule_remove(broker: str, name: str) -> None:
    """Delete NAME (the runs it fired stay)."""
    with TitanClient(broker) as c:
        c.remove_schedule(name)
    click.echo(f"schedule {name} removed")


@command(schedule, "run-now")
@click.argument("name")
def schedule_run_now(broker: str, name: str) -> None:
    """Fire NAME once now; prints the run id."""
    with TitanClient(broker) as c:
        click.echo(c.run_schedule_now(name).run_id)


@click.command("schedules")
@broker_option
@click.option("--json", "as_json", is_flag=True)
@clean_errors
def schedules_cmd(broker: str, as_json: bool) -> None:
    """Every schedule: cron, next fire time, last run and its state."""
    with TitanClient(broker) as c:
        items = c.schedules()
    if as_json:
        emit_json(items)
        return
    click.echo(f"{'NAME':<24} {'CRON':<20} {'STATE':<7} {'NEXT':<20} {'LAST RUN':<44} LAST STATE")
    for s in items:
        click.echo(f"{s['name']:<24} {s['cron']:<20} {'on' if s['enabled'] else 'paused':<7} "
                   f"{when(s['next_fire']):<20} {s['last_run'] or '—':<44} {s['last_state'] or '—'}")


# ---- workers -----------------------------------------------------------------------------------


@click.group()
def worker() -> None:
    """Elastic workers: drain, stop, launch."""


@command(worker, "drain")
@click.argument("worker_id")
def worker_drain(broker: str, worker_id: str) -> None:
    """No new jobs for WORKER_ID; it exits 0 once its running jobs are done."""
    with TitanClient(broker) as c:
        out = c.drain_worker(worker_id)
    click.echo(f"worker {worker_id} draining ({out['running']} running)")


@command(worker, "stop")
@click.argument("worker_id")
@click.option("--now", is_flag=True, help="Kill its jobs now (they are re-queued elsewhere, not as failures).")
def worker_stop(broker: str, worker_id: str, now: bool) -> None:
    """Stop WORKER_ID after its running jobs (or --now)."""
    with TitanClient(broker) as c:
        out = c.stop_worker(worker_id, now=now)
    click.echo(f"worker {worker_id} stopping{' now' if now else ''} ({out['running']} running)")


@command(worker, "launch")
@click.option("--capability", "capabilities", multiple=True, help="Capability tag (repeatable; default GENERAL).")
@click.option("--slots", type=click.IntRange(min=1), default=defaults.SLOTS, show_default=True)
@click.option("--on", "on", default=None, metavar="WORKER",
              help="Start it on this worker (as a service there) instead of on the broker's host.")
@click.option("--name", default=None, help="Worker name (default launched-<random>).")
def worker_launch(broker: str, capabilities: tuple[str, ...], slots: int, on: str | None, name: str | None) -> None:
    """Start a new ephemeral worker; prints its name."""
    with TitanClient(broker) as c:
        out = c.launch_worker(list(capabilities), slots=slots, on=on, name=name)
    where = f"on {on} (run {out['run_id']})" if on else f"pid {out['pid']}"
    click.echo(f"{out['worker']} {where}")


# ---- autoscaler --------------------------------------------------------------------------------


@click.command("autoscale")
@broker_option
@pool_option
@autoscale_options
@click.option("--interval", type=click.FloatRange(min=0.05), default=defaults.AUTOSCALE_INTERVAL, show_default=True,
              help="Seconds between looks at the broker.")
@click.option("--log-level", envvar="TITAN_LOG_LEVEL", show_envvar=True, default="INFO")
def autoscale(broker: str, pools: tuple[str, ...], scale_up_after: float, idle_timeout: float, worker_slots: int,
              interval: float, log_level: str) -> None:
    """Scale worker pools with the queue: launch when jobs wait, drain idle ephemeral workers."""
    try:
        parsed = [parse_pool(p) for p in pools]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--pool") from None
    setup_logging(log_level)
    scaler = Autoscaler(parsed, scale_up_after=scale_up_after, idle_timeout=idle_timeout, slots=worker_slots)
    with TitanClient(broker, timeout=5.0) as c:
        ctl = Controller(c, scaler, interval)

        def stop() -> None:
            ctl.running = False

        on_stop_signals(stop)
        ctl.run()
