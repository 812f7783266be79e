"""Bits shared by the component commands: logging set-up, signal handling, exposure and file modes."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import click

log = logging.getLogger(__name__)

insecure_option = click.option(
    "--insecure", envvar="TITAN_INSECURE", show_envvar=True, is_flag=True, default=False,
    help="Allow binding a non-loopback address although titan has no authentication yet (a warning in the "
         "log and `insecure` in the stats).")


def is_loopback(addr: str) -> bool:
    """Whether a ZeroMQ endpoint can only be reached from this host (tcp on loopback, ipc, inproc)."""
    scheme, _, rest = addr.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    host = rest.rpartition(":")[0].rpartition(";")[2].strip("[]")  # tcp://[src;]host:port
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface or a host name: reachable from elsewhere as far as we know
        return False


def check_exposure(component: str, addrs: list[str], insecure: bool) -> list[str]:
    """The addresses among ``addrs`` reachable from other hosts; refused (a usage error, exit 2)
    unless ``insecure``, and then said loudly in the log."""
    exposed = [a for a in addrs if not is_loopback(a)]
    if exposed and not insecure:
        raise click.UsageError(
            f"refusing to bind {', '.join(exposed)}: not a loopback address, and titan has no authentication "
            "yet (anyone who reaches the port could submit jobs, read the store or stop the process); "
            "pass --insecure (or TITAN_INSECURE=1) to do it anyway")
    if exposed:
        log.warning("INSECURE: %s listens on %s without authentication: anyone who reaches the port can "
                    "use it, including STOP", component, ", ".join(exposed))
    return exposed


def private_dirs(*dirs: Path, umask: bool = True) -> None:
    """Make ``dirs`` (mode 0700) and, with ``umask``, have every file this process creates be 0600:
    the store's AOF and the broker's logs hold scripts, environments and job output."""
    if umask:
        os.umask(0o077)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


def on_stop_signals(stop: Callable[[], None]) -> None:
    """Call ``stop`` on SIGTERM and SIGINT so the loop ends cleanly."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
