"""``titan-store``: run the store server (or repair its append-only file).

Exit status: 0 after a clean stop or a repair, 1 when the socket cannot be bound or the
journal could not be written, 2 when the AOF is corrupt (run with ``--repair``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

import zmq

from titan_zmq import defaults
from titan_zmq.cli_common import setup_logging
from titan_zmq.errors import AOFCorrupt
from titan_zmq.store.aof import FSYNC_POLICIES, repair
from titan_zmq.store.server import StoreServer
from titan_zmq.store.service import AOF_NAME

log = logging.getLogger("titan_zmq.store")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="titan-store",
        description="The titan-zmq store: KV, sets and TTLs behind a ZeroMQ REP socket, "
        "journaled to an append-only file (DATA_DIR/store.aof).",
    )
    parser.add_argument(
        "--bind",
        default=env("TITAN_STORE_BIND", defaults.STORE_ADDR),
        help="address to bind the REP socket to [env TITAN_STORE_BIND; default %(default)s]",
    )
    parser.add_argument(
        "--data-dir",
        default=env("TITAN_DATA_DIR", defaults.DATA_DIR),
        help="directory holding store.aof [env TITAN_DATA_DIR; default %(default)s]",
    )
    parser.add_argument(
        "--fsync",
        default=env("TITAN_FSYNC", defaults.FSYNC),
        help="AOF fsync policy: always (before every reply), everysec, or no "
        "[env TITAN_FSYNC; default %(default)s]",
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="truncate the AOF after its last good record, report what was cut, and exit",
    )
    parser.add_argument(
        "--log-level",
        default=env("TITAN_LOG_LEVEL", "INFO"),
        help="logging level [env TITAN_LOG_LEVEL; default %(default)s]",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.fsync not in FSYNC_POLICIES:
        parser.error(f"--fsync must be one of {', '.join(FSYNC_POLICIES)}, not {args.fsync!r}")
    setup_logging(args.log_level)
    data_dir = Path(args.data_dir)

    if args.repair:
        path = data_dir / AOF_NAME
        cut = repair(path)
        print(f"titan-store: repaired {path}: cut {cut} bytes" if cut else f"titan-store: {path} is intact")
        return 0

    try:
        server = StoreServer(args.bind, data_dir, args.fsync)
    except AOFCorrupt as exc:
        print(f"titan-store: {exc}", file=sys.stderr)
        return 2
    except zmq.ZMQError as exc:
        print(f"titan-store: cannot bind {args.bind}: {exc}", file=sys.stderr)
        return 1

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        server.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.serve_forever()
    finally:
        server.close()
    log.info("titan-store stopped")
    return 1 if server.failed else 0


if __name__ == "__main__":
    sys.exit(main())
