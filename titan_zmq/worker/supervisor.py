"""The worker's side of services (``type: service``): ports, health checks, stop grace.

The broker decides *whether* and *when* a service restarts (:mod:`titan_zmq.broker.services`: the
policy, the 1, 2, 4 ... s backoff and the crash-loop limit are journaled there, so they hold when a
worker dies or the broker restarts); the worker runs each start as an attempt and supervises it:

- :meth:`Supervisor.port_for` gives the attempt its port: the one the spec names, checked free on this
  host first (a taken port is a :class:`PortInUse` refusal, which the broker does not retry: no restart
  storm), or, for ``port: 0`` or none, a free one the kernel picks. The process gets it as ``PORT`` and
  ``TITAN_SERVICE_PORT``.
- :meth:`Supervisor.watch` then checks its health until it passes: ``tcp`` (a connection to the port; the
  default), ``{http: /path}`` (a 2xx answer), ``{command: [...]}`` (exit 0), or ``none`` (passes at once).
  Checks start every ``HEALTH_INTERVAL`` and back off to ``HEALTH_INTERVAL_MAX``; each runs on a small
  thread pool so the worker's loop never waits on a slow service. The first pass is a :class:`Ready`
  (the agent tells the broker: SERVICE_READY); a service not healthy within its ``timeout`` (when it
  has one) is :class:`Unhealthy` and the agent kills it (an exit like any other).
- :meth:`Supervisor.stop_grace` is how long a stop waits between SIGTERM and SIGKILL.

Time is passed in (``now``) and checks go through an injectable ``submit``, so the rules are unit-tested
without sockets or sleeps.
"""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from titan_zmq import defaults
from titan_zmq.attempt import AttemptKey
from titan_zmq.errors import JobRefused

HEALTH_INTERVAL_MAX = 2.0  # seconds: checks of a slow starter back off to this
HEALTH_THREADS = 2  # threads running health checks (HTTP and commands may take up to HEALTH_TIMEOUT)

Check = Callable[[], str | None]  # a health check: None when it passes, else why not
Submit = Callable[[Check], "Future[str | None]"]


class PortInUse(JobRefused):
    """The service's port is already in use on this host."""


def port_free(port: int) -> bool:
    """Whether nothing listens on ``port`` on any interface of this host (TIME_WAIT leftovers of an earlier
    run of the service do not count: SO_REUSEADDR, as servers use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def pick_port() -> int:
    """A port free right now, chosen by the kernel."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def health_check(health: Any, port: int, timeout: float = defaults.HEALTH_TIMEOUT) -> Check:
    """The check a service's ``health`` field asks for (see the module doc)."""
    if health == "none":
        return lambda: None
    if isinstance(health, dict) and "http" in health:
        url = f"http://127.0.0.1:{port}{health['http']}"
        return lambda: _http(url, timeout)
    if isinstance(health, dict) and "command" in health:
        argv = [str(a) for a in health["command"]]
        return lambda: _command(argv, port, timeout)
    return lambda: _tcp(port, timeout)


def _tcp(port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return None
    except OSError as exc:
        return f"tcp {port}: {exc.strerror or exc}"


def _http(url: str, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (a loopback URL we built)
            code = int(resp.status)
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (OSError, ValueError) as exc:
        return f"GET {url}: {exc}"
    return None if 200 <= code < 300 else f"GET {url}: HTTP {code}"


def _command(argv: list[str], port: int, timeout: float) -> str | None:
    try:
        done = subprocess.run(argv, env={**os.environ, "PORT": str(port), "TITAN_SERVICE_PORT": str(port)},
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{argv[0]}: {exc}"
    return None if done.returncode == 0 else f"{argv[0]} exited {done.returncode}"


@dataclass(frozen=True)
class Ready:
    """The service's health check passed."""

    key: AttemptKey
    port: int


@dataclass(frozen=True)
class Unhealthy:
    """The service did not pass its health check within its timeout: kill it."""

    key: AttemptKey
    reason: str


@dataclass(eq=False)
class Watch:
    """One service attempt under supervision."""

    key: AttemptKey
    port: int
    check: Check
    stop_grace: float
    started_at: float
    deadline: float | None  # not healthy by then: Unhealthy
    next_check: float
    checks: int = 0
    pending: Future[str | None] | None = None
    done: bool = False  # no more checks: it passed (healthy) or gave up
    healthy: bool = False
    last_error: str | None = field(default=None)


class Supervisor:
    """The service attempts a worker runs, from their port to READY, and how long they get to stop."""

    def __init__(self, interval: float = defaults.HEALTH_INTERVAL, timeout: float = defaults.HEALTH_TIMEOUT,
                 submit: Submit | None = None):
        self.interval = interval
        self.timeout = timeout
        self._pool: ThreadPoolExecutor | None = None
        self._submit = submit or self._thread
        self.watches: dict[AttemptKey, Watch] = {}
        self.ports: dict[AttemptKey, int] = {}  # attempts given a port, until they end

    def _thread(self, check: Check) -> Future[str | None]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(HEALTH_THREADS, thread_name_prefix="titan-health")
        return self._pool.submit(check)

    def port_for(self, key: AttemptKey, spec: dict[str, Any], host: str = "this host",
                 free: Callable[[int], bool] = port_free) -> int:
        """The attempt's port: the spec's, if free on this host (else :class:`PortInUse`), or a free one."""
        wanted = spec.get("port")
        if isinstance(wanted, int) and wanted > 0:
            if wanted not in self.ports.values() and free(wanted):
                port = wanted
            else:
                raise PortInUse(f"port {wanted} is already in use on {host}: service {key.job_id} cannot start"
                                " (stop what listens there, or give the service another port, or port: 0)")
        else:
            port = pick_port()
        self.ports[key] = port
        return port

    @staticmethod
    def env(port: int) -> dict[str, str]:
        """What a service's process is told about its port."""
        return {"PORT": str(port), "TITAN_SERVICE_PORT": str(port)}

    def watch(self, key: AttemptKey, spec: dict[str, Any], port: int, now: float,
              check: Check | None = None) -> Watch:
        """Start checking a started service attempt's health."""
        timeout = spec.get("timeout")
        w = Watch(key=key, port=port, check=check or health_check(spec.get("health"), port, self.timeout),
                  stop_grace=float(spec.get("stop_grace", defaults.SERVICE_STOP_GRACE)), started_at=now,
                  deadline=now + float(timeout) if timeout else None, next_check=now)
        self.watches[key] = w
        return w

    def poll(self, now: float) -> list[Ready | Unhealthy]:
        """Collect finished checks and start due ones; what became READY or gave up."""
        out: list[Ready | Unhealthy] = []
        for w in list(self.watches.values()):
            if w.done:
                continue
            if w.pending is not None and w.pending.done():
                err = _result(w.pending)
                w.pending = None
                if err is None:
                    w.done = w.healthy = True
                    out.append(Ready(w.key, w.port))
                    continue
                w.last_error = err
            if w.deadline is not None and now >= w.deadline:
                w.done = True  # no more checks: the agent kills it
                out.append(Unhealthy(w.key, f"not healthy within {w.deadline - w.started_at:g}s"
                                     + (f" ({w.last_error})" if w.last_error else "")))
                continue
            if w.pending is None and now >= w.next_check:
                w.checks += 1
                w.next_check = now + self.check_gap(w.checks)
                w.pending = self._submit(w.check)
        return out

    def check_gap(self, checks: int) -> float:
        """Seconds between the ``checks``-th check and the next: the interval, doubling to HEALTH_INTERVAL_MAX."""
        return float(min(HEALTH_INTERVAL_MAX, self.interval * 2 ** max(0, checks - 1)))

    def next_wake(self, now: float) -> float | None:
        """When the loop should come back: the next check, or (one running) a look at its result."""
        times = []
        for w in self.watches.values():
            if w.done:
                continue
            times.append(w.next_check if w.pending is None else now + self.interval)
            if w.deadline is not None:
                times.append(w.deadline)
        return min(times) if times else None

    def ready(self) -> list[Watch]:
        """The attempts whose health check passed (re-reported to a broker that restarted)."""
        return [w for w in self.watches.values() if w.healthy]

    def stop_grace(self, key: AttemptKey) -> float | None:
        """Seconds between SIGTERM and SIGKILL for this attempt (None: not a service, the default)."""
        w = self.watches.get(key)
        return w.stop_grace if w is not None else None

    def is_service(self, key: AttemptKey) -> bool:
        return key in self.ports

    def forget(self, key: AttemptKey) -> None:
        self.ports.pop(key, None)
        w = self.watches.pop(key, None)
        if w is not None and w.pending is not None:
            w.pending.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _result(fut: Future[str | None]) -> str | None:
    try:
        return fut.result()
    except Exception as exc:  # a check that raised did not pass
        return f"health check failed: {exc}"
