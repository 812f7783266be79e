"""A local cluster of real processes (store, broker, workers): for `titan up`, the demo, tests and bench."""

from __future__ import annotations

import errno
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from client.api import TitanClient
from titan_zmq.cli_common import LIFELINE_ENV
from titan_zmq.errors import BrokerUnavailable, TitanError

PORTS = 4  # broker, PUB, store, (UI): P..P+3
LOW_PORT = 20000  # auto-picked ports are at least this (below: well-known services of the host)
PORT_ATTEMPTS = 5  # times an auto-picked block of ports is replaced after a bind clash
ADDR_IN_USE = os.strerror(errno.EADDRINUSE)  # how a component's log says its port was taken


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands out to outgoing connections (and to binds of port 0)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _candidate_base_port(host: str, count: int = PORTS) -> int:
    """A base port P with P..P+count-1 free *right now*: only a guess, as anything may bind them
    before our components do, so whoever uses it retries on a clash (:meth:`LocalCluster.wait_ready`).

    P is picked at random below the kernel's ephemeral range when there is room: outgoing connections
    take their local ports from that range, so a component restarted on its ports (after a crash, or
    in a test that kills it) never finds one of them held by some process's connection meanwhile.
    """
    low, _ = _ephemeral_range()
    below = low - count > LOW_PORT
    for _ in range(200):
        if below:
            base = random.randrange(LOW_PORT, low - count)
        else:
            with socket.socket() as s:
                s.bind((host, 0))
                base = int(s.getsockname()[1])
            if base + count >= 65535:
                continue
        try:
            for p in range(base, base + count):
                with socket.socket() as s:
                    s.bind((host, p))
        except OSError:
            continue
        return base
    raise TitanError("no free block of ports found")


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    log_start: int = 0  # offset in log_path where this run's output begins

    def start(self, env: dict[str, str] | None = None, lifeline: int | None = None) -> None:
        """Start the process in a session of its own; with ``lifeline`` (the read end of a pipe whose
        write end only this process holds) it stops when this process dies, even by kill -9."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.log_start = log.tell()
        fds: tuple[int, ...] = ()
        if lifeline is not None:
            env, fds = dict(os.environ if env is None else env, **{LIFELINE_ENV: str(lifeline)}), (lifeline,)
        self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, env=env, pass_fds=fds)
        log.close()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def output(self) -> str:
        """What this run of the process logged (earlier runs share the file)."""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Signal the process's whole group (it and the jobs it started)."""
        if self.popen is not None and self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(5)
        # jobs a worker started live in their own groups; they are killed by the worker itself

    def kill(self) -> None:
        """kill -9 the process only (not its jobs): a crash."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


@dataclass
class LocalCluster:
    """Store, broker and workers (and, with ``ui``, the web UI) as real local processes on ports P..P+3.

    With ``base_port`` 0 (the default) P is picked among free ports, and if another process binds
    one of them before the store or broker does, :meth:`wait_ready` starts everything again on a
    new block (the components bind, so only they can tell; a port probed free can be taken before
    they start).  An explicit ``base_port`` is used as given.

    Each component can be started, killed (``procs[name].kill()``, a crash) and started again alone
    on the same ports; ``stop()`` ends them all, workers first. Every component holds a lifeline to
    this process (``titan_zmq.cli_common``): if it dies, even by kill -9, they stop too.
    """

    data_dir: Path
    base_port: int = 0
    workers: int = 2
    slots: int = 4
    worker_caps: list[list[str]] = field(default_factory=list)  # per worker; default GENERAL
    broker_args: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    ui: bool = False  # also start the web UI (`titan-ui`) on P+3, see ui_url
    permanent: bool = False  # start the workers with --permanent (never scaled down)
    autoscale: list[str] = field(default_factory=list)  # `titan autoscale` arguments (--pool ...): run it too
    ui_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    procs: dict[str, Proc] = field(default_factory=dict)
    # how each component was started, to start it again on new ports after a bind clash
    _starts: dict[str, Callable[[], Proc]] = field(default_factory=dict, repr=False)
    _lifeline: tuple[int, int] | None = field(default=None, repr=False)  # (read, write) ends of the pipe

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self._auto_ports = not self.base_port
        if self._auto_ports:
            self.base_port = _candidate_base_port(self.host)

    @property
    def broker_addr(self) -> str:
        return f"tcp://{self.host}:{self.base_port}"

    @property
    def pub_addr(self) -> str:
        return f"tcp://{self.host}:{self.base_port + 1}"

    @property
    def store_addr(self) -> str:
        return f"tcp://{self.host}:{self.base_port + 2}"

    @property
    def ui_url(self) -> str:
        """The UI's address with its access token (what a user opens)."""
        return f"http://{self.host}:{self.base_port + 3}/?token={self.ui_token}"

    def _py(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, *args]

    def start(self, wait: float = 30.0) -> LocalCluster:
        self.start_store()
        self.start_broker()
        for i in range(self.workers):
            caps = self.worker_caps[i] if i < len(self.worker_caps) else []
            self.start_worker(f"worker{i + 1}", caps)
        if self.ui:
            self.start_ui()
        if self.autoscale:
            self.start_autoscaler()
        self.wait_ready(self.workers, wait)
        return self

    def start_store(self, extra: list[str] | None = None) -> Proc:
        self._starts["store"] = lambda: self.start_store(extra)
        return self._start("store", self._py(
            "titan_zmq.store", "--bind", self.store_addr, "--data-dir", str(self.data_dir / "store"), *(extra or [])))

    def start_broker(self) -> Proc:
        self._starts["broker"] = self.start_broker
        return self._start("broker", self._py(
            "titan_zmq.broker", "--bind", self.broker_addr, "--pub", self.pub_addr, "--store", self.store_addr,
            "--data-dir", str(self.data_dir / "broker"), "--worker-workspace", str(self.data_dir / "work"),
            *self.broker_args))

    def start_worker(self, name: str, caps: list[str] | None = None, slots: int | None = None) -> Proc:
        self._starts[name] = lambda: self.start_worker(name, caps, slots)
        argv = self._py("titan_zmq.worker", "--broker", self.broker_addr, "--slots", str(slots or self.slots),
                        "--workspace", str(self.data_dir / "work"), "--name", name)
        for cap in caps or []:
            argv += ["--capability", cap]
        if self.permanent:
            argv.append("--permanent")
        return self._start(name, argv)

    def start_autoscaler(self, args: list[str] | None = None) -> Proc:
        """`titan autoscale` as a process of its own (``args``: its --pool and tunables)."""
        if args is not None:
            self.autoscale = list(args)
        self._starts["autoscale"] = self.start_autoscaler
        return self._start("autoscale", self._py("client.cli", "autoscale", "--broker", self.broker_addr,
                                                  *self.autoscale))

    def start_ui(self) -> Proc:
        """The web UI as its own process on P+3, talking to the broker like any client."""
        self._starts["ui"] = self.start_ui
        return self._start("ui", self._py(
            "ui", "--broker", self.broker_addr, "--bind", f"{self.host}:{self.base_port + 3}", "--token", self.ui_token))

    def _start(self, name: str, argv: list[str]) -> Proc:
        old = self.procs.get(name)
        if old is not None and old.alive():
            raise TitanError(f"{name} is already running")
        proc = Proc(name, argv, self.data_dir / "logs" / f"{name}.log")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self._lifeline is None:
            self._lifeline = os.pipe()  # neither end is inherited, but for the read end passed on here
        proc.start(env, lifeline=self._lifeline[0])
        self.procs[name] = proc
        return proc

    def client(self, timeout: float = 10.0) -> TitanClient:
        return TitanClient(self.broker_addr, timeout=timeout)

    def wait_ready(self, workers: int, timeout: float = 30.0) -> None:
        """Wait until the broker answers and ``workers`` workers are registered.

        When the ports were picked here and the store or broker could not bind one (another
        process took it first), everything started so far is started again on a new block.
        """
        for _ in range(PORT_ATTEMPTS):
            if self._wait_ready(workers, timeout):
                self._auto_ports = False  # the ports are ours now; restarts reuse them
                return
            clash = self.base_port
            self.stop()
            self.base_port = _candidate_base_port(self.host)
            print(f"titan: a port of block {clash} was taken first; starting again on {self.base_port}",
                  file=sys.stderr)
            for name, start in list(self._starts.items()):
                if name in self.procs:
                    start()
        raise TitanError(f"ports kept being taken; {PORT_ATTEMPTS} blocks tried")

    def _wait_ready(self, workers: int, timeout: float) -> bool:
        """True once ready; False when a port clash calls for new ports; raises on anything else."""
        deadline = time.monotonic() + timeout
        with self.client(timeout=2.0) as c:
            while True:
                for proc in self.procs.values():
                    if proc.popen is not None and proc.popen.poll() is not None:
                        if self._auto_ports and proc.name in ("store", "broker", "ui") and ADDR_IN_USE in proc.output():
                            return False
                        raise TitanError(f"{proc.name} exited with {proc.popen.returncode}; see {proc.log_path}")
                try:
                    if len(c.workers()) >= workers:
                        return True
                except BrokerUnavailable:
                    pass
                if time.monotonic() > deadline:
                    raise TitanError(f"cluster not ready after {timeout:g}s; logs in {self.data_dir / 'logs'}")
                time.sleep(0.1)

    def stop(self) -> None:
        """Workers first (they kill their jobs), then the broker, then the store."""
        order = [n for n in dict.fromkeys(["autoscale", *self.procs]) if n not in ("broker", "store")] + ["broker", "store"]
        for name in order:
            if name in self.procs:
                self.procs[name].stop()
        if self._lifeline is not None:
            for fd in self._lifeline:
                os.close(fd)
            self._lifeline = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
