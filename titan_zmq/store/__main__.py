"""``titan-store``: run the store server (or repair its append-only file).

Exit status: 0 after a clean stop or a repair, 1 when the socket cannot be bound or the
journal could not be written, 2 when the AOF is corrupt (run with ``--repair``) or a flag is wrong.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import zmq

from titan_zmq import defaults
from titan_zmq.cli_common import check_exposure, insecure_option, on_stop_signals, private_dirs, setup_logging
from titan_zmq.errors import AOFCorrupt
from titan_zmq.store.aof import FSYNC_POLICIES, repair
from titan_zmq.store.server import StoreServer
from titan_zmq.store.service import AOF_NAME

log = logging.getLogger(__name__)


@click.command(context_settings={"show_default": True})
@click.option("--bind", envvar="TITAN_STORE_BIND", show_envvar=True, default=defaults.STORE_ADDR,
              help="Address to bind the REP socket to.")
@click.option("--data-dir", envvar="TITAN_DATA_DIR", show_envvar=True, default=defaults.DATA_DIR,
              help="Directory holding store.aof.")
@click.option("--fsync", envvar="TITAN_FSYNC", show_envvar=True, default=defaults.FSYNC,
              type=click.Choice(FSYNC_POLICIES),
              help="AOF fsync policy: always (before every reply), everysec, or no.")
@click.option("--repair", "repair_aof", is_flag=True, default=False,
              help="Truncate the AOF after its last good record, report what was cut, and exit.")
@insecure_option
@click.option("--log-level", envvar="TITAN_LOG_LEVEL", show_envvar=True, default="INFO")
def main(bind: str, data_dir: str, fsync: str, repair_aof: bool, insecure: bool, log_level: str) -> None:
    """The titan-zmq store: KV, sets and TTLs behind a ZeroMQ REP socket, journaled to an
    append-only file (DATA_DIR/store.aof)."""
    setup_logging(log_level)
    exposed = check_exposure("titan-store", [bind], insecure)
    sys.exit(run(bind, Path(data_dir), fsync, repair_aof, log_level, insecure=bool(exposed)))


def run(bind: str, data_dir: Path, fsync: str, repair_aof: bool, log_level: str, insecure: bool = False) -> int:
    setup_logging(log_level)
    private_dirs(data_dir)  # 0700, and the AOF 0600 (also one made by an older version)
    if (data_dir / AOF_NAME).exists():
        (data_dir / AOF_NAME).chmod(0o600)
    if repair_aof:
        path = data_dir / AOF_NAME
        cut = repair(path)
        print(f"titan-store: repaired {path}: cut {cut} bytes" if cut else f"titan-store: {path} is intact")
        return 0
    try:
        server = StoreServer(bind, data_dir, fsync, insecure=insecure)
    except AOFCorrupt as exc:
        print(f"titan-store: {exc}", file=sys.stderr)
        return 2
    except zmq.ZMQError as exc:
        print(f"titan-store: cannot bind {bind}: {exc}", file=sys.stderr)
        return 1

    on_stop_signals(server.stop)
    server.serve()
    log.info("titan-store stopped")
    return 1 if server.failed else 0


if __name__ == "__main__":
    main()
