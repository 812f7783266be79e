"""`titan-broker`: run the broker."""

from __future__ import annotations

import click

from titan_zmq import defaults
from titan_zmq.broker.server import Broker
from titan_zmq.cli_common import on_stop_signals, setup_logging


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
@click.option("--max-log-bytes", envvar="TITAN_MAX_LOG_BYTES", show_envvar=True, type=click.IntRange(min=1),
              default=defaults.MAX_LOG_BYTES, help="Log bytes kept per job; later lines are dropped with a marker.")
@click.option("--log-level", envvar="TITAN_LOG_LEVEL", show_envvar=True, default="INFO")
def main(bind: str, pub: str, store: str, data_dir: str, heartbeat_interval: float, liveness: int,
         retry_backoff: float, max_body: int, store_timeout: float, max_log_bytes: int, log_level: str) -> None:
    """Run the titan broker: schedules jobs and DAGs onto workers."""
    setup_logging(log_level)
    broker = Broker(bind=bind, pub=pub, store=store, data_dir=data_dir, heartbeat_interval=heartbeat_interval,
                    liveness=liveness, retry_backoff=retry_backoff, max_body=max_body, store_timeout=store_timeout,
                    max_log_bytes=max_log_bytes)
    on_stop_signals(broker.stop)
    broker.serve()


if __name__ == "__main__":
    main()
