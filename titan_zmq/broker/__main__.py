"""`titan-broker`: run the broker."""

from __future__ import annotations

from pathlib import Path

import click

from titan_zmq import defaults
from titan_zmq.broker.retention import parse_duration
from titan_zmq.broker.server import Broker
from titan_zmq.cli_common import check_exposure, insecure_option, on_stop_signals, private_dirs, setup_logging


@click.command(context_settings={"show_default": True})
@click.option("--bind", envvar="TITAN_BROKER_BIND", show_envvar=True, default=defaults.BROKER_ADDR,
              help="ROUTER address for clients and workers.")
@click.option("--pub", envvar="TITAN_PUB_BIND", show_envvar=True, default=defaults.PUB_ADDR,
              help="PUB address for logs, events and heartbeat ticks.")
@click.option("--store", envvar="TITAN_STORE", show_envvar=True, default=defaults.STORE_ADDR,
              help="Address of the store.")
@click.option("--data-dir", envvar="TITAN_DATA_DIR", show_envvar=True, default=defaults.DATA_DIR,
              help="Directory for job logs.")
@click.option("--heartbeat-interval", envvar="TITAN_HEARTBEAT_INTERVAL", show_envvar=True, type=float,
              default=defaults.HEARTBEAT_INTERVAL, help="Seconds between heartbeats.")
@click.option("--liveness", envvar="TITAN_LIVENESS", show_envvar=True, type=int,
              default=defaults.HEARTBEAT_LIVENESS, help="Missed heartbeats before a worker is lost.")
@click.option("--retry-backoff", envvar="TITAN_RETRY_BACKOFF", show_envvar=True, type=float,
              default=defaults.RETRY_BACKOFF, help="Seconds before the first retry (doubles each time).")
@click.option("--max-body", envvar="TITAN_MAX_BODY", show_envvar=True, type=int,
              default=defaults.MAX_BODY_BYTES, help="Largest frame body accepted, bytes.")
@click.option("--store-timeout", envvar="TITAN_STORE_TIMEOUT", show_envvar=True, type=float,
              default=defaults.STORE_TIMEOUT, help="Seconds to wait for the store.")
@click.option("--max-asset-bytes", envvar="TITAN_MAX_ASSET_BYTES", show_envvar=True, type=int,
              default=defaults.MAX_ASSET_BYTES, help="Largest asset or artifact accepted by upload, bytes.")
@click.option("--retain", envvar="TITAN_RETAIN", show_envvar=True, default="7d",
              help="Finished runs leave memory, the store and the logs this long after they finish "
                   "(7d, 12h, 30m, 45s or seconds; 0 or forever: no age limit).")
@click.option("--retain-runs", envvar="TITAN_RETAIN_RUNS", show_envvar=True, type=click.IntRange(min=0),
              default=defaults.RETAIN_RUNS, help="Finished runs kept at most, the newest (0: no limit).")
@click.option("--max-log-bytes", envvar="TITAN_MAX_LOG_BYTES", show_envvar=True, type=click.IntRange(min=1),
              default=defaults.MAX_LOG_BYTES, help="Log bytes kept per job; later lines are dropped with a marker.")
@click.option("--notify-url", "notify_urls", multiple=True, envvar="TITAN_NOTIFY_URL", show_envvar=True,
              help="POST a JSON event here for gate_pending, gate_decided and run_finished (repeatable; the env "
                   "var takes several URLs separated by spaces). Retried with backoff for up to an hour; never "
                   "blocks the scheduler.")
@click.option("--worker-workspace", envvar="TITAN_LAUNCH_WORKSPACE", show_envvar=True, default=None,
              help="Workspace of the workers this broker launches (`titan worker launch`); default <data-dir>/work.")
@insecure_option
@click.option("--log-level", envvar="TITAN_LOG_LEVEL", show_envvar=True, default="INFO")
def main(bind: str, pub: str, store: str, data_dir: str, heartbeat_interval: float, liveness: int,
         retry_backoff: float, max_body: int, store_timeout: float, max_asset_bytes: int, retain: str,
         retain_runs: int, max_log_bytes: int, notify_urls: tuple[str, ...], worker_workspace: str | None,
         insecure: bool, log_level: str) -> None:
    """Run the titan broker: schedules jobs and DAGs onto workers."""
    try:
        max_age = parse_duration(retain)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--retain") from None
    for url in notify_urls:
        if not url.startswith(("http://", "https://")):
            raise click.BadParameter(f"{url!r}: expected an http:// or https:// URL", param_hint="--notify-url")
    setup_logging(log_level)
    exposed = check_exposure("titan-broker", [bind, pub], insecure)
    private_dirs(Path(data_dir))  # 0700, and the job logs in it 0600
    broker = Broker(bind=bind, pub=pub, store=store, data_dir=data_dir, heartbeat_interval=heartbeat_interval,
                    liveness=liveness, retry_backoff=retry_backoff, max_body=max_body, store_timeout=store_timeout,
                    max_asset=max_asset_bytes, exposed=exposed, retain=max_age, retain_runs=retain_runs or None,
                    max_log_bytes=max_log_bytes, notify_urls=notify_urls, worker_workspace=worker_workspace)
    on_stop_signals(broker.interrupt)
    broker.serve()


if __name__ == "__main__":
    main()
