"""Bits shared by the component commands: logging set-up and signal handling.

A component started by ``titan up`` (``client/cluster.py``) also stops when that process dies, even by
``kill -9``: it inherits the read end of a pipe whose write end only the parent holds (its fd number in
``$TITAN_LIFELINE_FD``). A thread blocks reading it; end of file means the parent is gone, and the
component stops as on SIGTERM (after ``LIFELINE_GRACE`` seconds it exits regardless). A pipe rather than
``PR_SET_PDEATHSIG``: it is portable, needs no code between fork and exec, and is tied to the parent
process, not to the thread that started the child.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

LIFELINE_ENV = "TITAN_LIFELINE_FD"  # fd of the pipe that reaches end of file when the parent dies
LIFELINE_GRACE = 15.0  # seconds a component has to stop cleanly once its parent died, then it exits


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
