"""`titan-worker`: run a worker."""

from __future__ import annotations

from pathlib import Path

import click

from titan_zmq import defaults
from titan_zmq.cli_common import on_stop_signals, private_dirs, setup_logging
from titan_zmq.worker.agent import WorkerAgent
from titan_zmq.worker.workspace import Limits


@click.command(context_settings={"show_default": True})
@click.option("--broker", envvar="TITAN_BROKER", show_envvar=True, default=defaults.BROKER_ADDR,
              help="Broker ROUTER address.")
@click.option("--capability", "capabilities", envvar="TITAN_CAPABILITIES", show_envvar=True, multiple=True,
              help="Capability tag (repeatable; env var space-separated). Default GENERAL.")
@click.option("--slots", envvar="TITAN_SLOTS", show_envvar=True, type=int, default=defaults.SLOTS,
              help="Jobs run at once.")
@click.option("--permanent/--no-permanent", envvar="TITAN_PERMANENT", show_envvar=True, default=False,
              help="Mark the worker permanent (never scaled down).")
@click.option("--workspace", envvar="TITAN_WORKSPACE_DIR", show_envvar=True, default=defaults.WORKSPACE,
              help="Directory for attempt workspaces, run directories and project archives.")
@click.option("--name", envvar="TITAN_WORKER_NAME", show_envvar=True, default=None,
              help="Worker name (default host-pid-random).")
@click.option("--heartbeat-interval", envvar="TITAN_HEARTBEAT_INTERVAL", show_envvar=True, type=float,
              default=defaults.HEARTBEAT_INTERVAL)
@click.option("--liveness", envvar="TITAN_LIVENESS", show_envvar=True, type=int, default=defaults.HEARTBEAT_LIVENESS)
@click.option("--max-archive-bytes", envvar="TITAN_MAX_ARCHIVE_BYTES", show_envvar=True, type=click.IntRange(min=1),
              default=defaults.MAX_ARCHIVE_BYTES, help="Largest project archive accepted, bytes.")
@click.option("--max-extracted-bytes", envvar="TITAN_MAX_EXTRACTED_BYTES", show_envvar=True,
              type=click.IntRange(min=1), default=defaults.MAX_EXTRACTED_BYTES,
              help="Largest unpacked project accepted, bytes.")
@click.option("--max-unpack-ratio", envvar="TITAN_MAX_UNPACK_RATIO", show_envvar=True, type=click.FloatRange(min=0),
              default=defaults.MAX_UNPACK_RATIO,
              help=f"Refuse projects that unpack to more than this many times their archive (over "
                   f"{defaults.UNPACK_RATIO_FREE_BYTES >> 20} MiB; 0 = no check).")
@click.option("--keep-failed", envvar="TITAN_KEEP_FAILED", show_envvar=True, type=click.FloatRange(min=0),
              default=defaults.KEEP_FAILED_HOURS,
              help="Hours a failed attempt's workspace is kept (under <workspace>/failed); 0 = not kept.")
@click.option("--max-silence", envvar="TITAN_WORKER_MAX_SILENCE", show_envvar=True, type=click.FloatRange(min=0),
              default=0.0, help="Exit once the broker has been silent this many seconds (0 = never; workers the "
                                "broker launches get this, so none outlives its broker for long).")
@click.option("--log-level", envvar="TITAN_LOG_LEVEL", show_envvar=True, default="INFO")
def main(broker: str, capabilities: tuple[str, ...], slots: int, permanent: bool, workspace: str,
         name: str | None, heartbeat_interval: float, liveness: int, max_archive_bytes: int,
         max_extracted_bytes: int, max_unpack_ratio: float, keep_failed: float, max_silence: float,
         log_level: str) -> None:
    """Run a titan worker: runs the jobs the broker sends it."""
    setup_logging(log_level)
    private_dirs(Path(workspace), umask=False)  # 0700: jobs keep the usual umask for what they write inside
    limits = Limits(archive=max_archive_bytes, extracted=max_extracted_bytes, ratio=max_unpack_ratio)
    agent = WorkerAgent(broker=broker, capabilities=list(capabilities), slots=slots, permanent=permanent,
                        workspace=workspace, name=name, heartbeat_interval=heartbeat_interval, liveness=liveness,
                        limits=limits, keep_failed_hours=keep_failed, max_silence=max_silence)
    on_stop_signals(agent.stop)
    agent.serve()


if __name__ == "__main__":
    main()
