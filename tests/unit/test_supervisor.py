"""The worker's service supervision (worker/supervisor.py): ports, health checks and their pace, stop grace."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from titan_zmq.attempt import AttemptKey as K
from titan_zmq.worker.supervisor import (
    PortInUse,
    Ready,
    Supervisor,
    Unhealthy,
    health_check,
    pick_port,
    port_free,
)

pytestmark = pytest.mark.timeout(30)
KEY = K("r", "web", 1)


class Checks:
    """Health checks run when the test says: each submitted check waits in ``pending`` for an answer."""

    def __init__(self) -> None:
        self.pending: list[Future[str | None]] = []

    def submit(self, check: Any) -> Future[str | None]:
        fut: Future[str | None] = Future()
        self.pending.append(fut)
        return fut

    def answer(self, result: str | None) -> None:
        self.pending.pop(0).set_result(result)


@pytest.fixture
def checks() -> Checks:
    return Checks()


def test_checks_start_at_once_back_off_and_the_first_pass_is_ready(checks: Checks) -> None:
    sup = Supervisor(interval=0.1, submit=checks.submit)
    sup.watch(KEY, {"type": "service"}, 8000, now=10.0, check=lambda: None)
    assert sup.poll(10.0) == [] and len(checks.pending) == 1  # the first check at once
    times = [10.0]
    now = 10.0
    for _ in range(5):  # failing checks come at 0.1, 0.2, 0.4, 0.8 s gaps, then at most every 2 s
        checks.answer("refused")
        nxt = sup.watches[KEY].next_check
        assert sup.poll(nxt - 0.001) == [] and not checks.pending  # not before it is due
        now = nxt
        assert sup.poll(now) == [] and len(checks.pending) == 1
        times.append(now)
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:], strict=False)]
    assert gaps == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert sup.check_gap(10) == 2.0
    checks.answer(None)
    assert sup.poll(now + 0.01) == [Ready(KEY, 8000)]
    assert sup.poll(now + 5) == [] and not checks.pending  # no more checks once READY
    assert [w.key for w in sup.ready()] == [KEY] and sup.next_wake(now + 5) is None


def test_a_service_not_healthy_within_its_timeout_is_unhealthy_once(checks: Checks) -> None:
    sup = Supervisor(interval=0.5, submit=checks.submit)
    sup.watch(KEY, {"timeout": 2, "stop_grace": 4}, 8000, now=0.0, check=lambda: None)
    sup.poll(0.0)
    checks.answer("connection refused")
    sup.poll(0.5)
    assert sup.next_wake(0.6) == pytest.approx(1.1)  # a running check is looked at every interval
    out = sup.poll(2.0)
    assert out == [Unhealthy(KEY, "not healthy within 2s (connection refused)")]
    assert sup.poll(3.0) == [] and sup.stop_grace(KEY) == 4.0 and sup.ready() == []


def test_health_none_passes_at_once_and_forget_drops_the_watch(checks: Checks) -> None:
    sup = Supervisor(submit=checks.submit)
    sup.watch(KEY, {"health": "none"}, 8000, now=0.0)
    sup.poll(0.0)
    assert checks.pending and checks.pending[0] is not None
    sup.forget(KEY)
    assert sup.watches == {} and sup.stop_grace(KEY) is None and sup.poll(1.0) == []


def test_ports_a_given_free_port_a_taken_one_is_refused_naming_it_zero_picks_one() -> None:
    sup = Supervisor()
    assert sup.port_for(KEY, {"port": 8123}, "h1", free=lambda p: True) == 8123
    with pytest.raises(PortInUse, match="port 8124 is already in use on h1"):
        sup.port_for(K("r", "b", 1), {"port": 8124}, "h1", free=lambda p: False)
    with pytest.raises(PortInUse, match="port 8123"):  # one this worker already gave out
        sup.port_for(K("r", "c", 1), {"port": 8123}, "h1", free=lambda p: True)
    picked = sup.port_for(K("r", "d", 1), {"port": 0}, "h1")
    assert picked > 0 and port_free(picked)
    assert sup.env(picked) == {"PORT": str(picked), "TITAN_SERVICE_PORT": str(picked)}


def test_port_free_sees_a_listener_on_loopback() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert not port_free(s.getsockname()[1])
    assert port_free(pick_port())


@pytest.fixture
def http_server() -> Iterator[int]:
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


def test_the_real_checks_tcp_http_command(http_server: int) -> None:
    assert health_check(None, http_server)() is None  # tcp by default
    assert health_check("tcp", pick_port(), timeout=0.5)() is not None
    assert health_check({"http": "/ok"}, http_server)() is None
    assert "HTTP 503" in (health_check({"http": "/bad"}, http_server)() or "")
    assert health_check({"command": ["sh", "-c", 'test "$PORT" = 77']}, 77)() is None
    assert "exited 1" in (health_check({"command": ["false"]}, 77)() or "")
    assert health_check("none", 1)() is None
