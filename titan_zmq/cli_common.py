"""Bits shared by the component commands: logging set-up, signal handling, exposure and file modes.

A component started by ``titan up`` (``client/cluster.py``) also stops when that process dies, even by
``kill -9``: it inherits the read end of a pipe whose write end only the parent holds (its fd number in
``$TITAN_LIFELINE_FD``). A thread blocks reading it; end of file means the parent is gone, and the
component stops as on SIGTERM (after ``LIFELINE_GRACE`` seconds it exits regardless). A pipe rather than
``PR_SET_PDEATHSIG``: it is portable, needs no code between fork and exec, and is tied to the parent
process, not to the thread that started the child.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import click

log = logging.getLogger(__name__)

LIFELINE_ENV = "TITAN_LIFELINE_FD"  # fd of the pipe that reaches end of file when the parent dies
LIFELINE_GRACE = 15.0  # seconds a component has to stop cleanly once its parent died, then it exits


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
    """Call ``stop`` on SIGTERM and SIGINT so the loop ends cleanly, and when the parent that started
    this process with a lifeline (``titan up``) dies."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    watch_lifeline()


def watch_lifeline() -> threading.Thread | None:
    """Stop this process (SIGTERM to itself) once the parent's end of the lifeline pipe closes.

    The variable is taken out of the environment, so the jobs a worker starts do not inherit it.
    """
    value = os.environ.pop(LIFELINE_ENV, None)
    if value is None:
        return None
    try:
        fd = int(value)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise ValueError("not a pipe")
    except (ValueError, OSError) as exc:
        log.warning("%s=%s ignored: %s", LIFELINE_ENV, value, exc)
        return None
    thread = threading.Thread(target=_wait_for_parent, args=(fd,), name="lifeline", daemon=True)
    thread.start()
    return thread


def _wait_for_parent(fd: int) -> None:
    try:
        while os.read(fd, 64):  # the parent never writes: this returns b"" once it is gone
            pass
    except OSError:
        pass
    log.warning("the process that started this one is gone: stopping")
    os.kill(os.getpid(), signal.SIGTERM)
    threading.Event().wait(LIFELINE_GRACE)
    log.error("still running %.0fs after the parent died: exiting", LIFELINE_GRACE)
    os._exit(1)
