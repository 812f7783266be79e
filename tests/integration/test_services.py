"""Services (issue 11): real broker, store and workers running supervised processes with ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import job_state, listening, process_gone, wait_until, write_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# An HTTP service answering with its pid and port; it listens on $PORT.
HTTP_PY = """
import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"pid": os.getpid(), "port": int(os.environ["PORT"]),
                           "also": os.environ["TITAN_SERVICE_PORT"]}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass
print("serving on", os.environ["PORT"], flush=True)
http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
"""

CRASH_PY = """
import sys, time
print("starting, then failing", flush=True)
time.sleep(0.5)
print("boom: giving up", flush=True)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
"""

CLIENT_PY = """
import json, os, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{os.environ['PORT']}/", timeout=5) as r:
    doc = json.loads(r.read())
print("server said", json.dumps(doc), "via", os.environ["TITAN_SERVICE_SERVER_ADDR"], flush=True)
"""


def get(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as r:
        return dict(json.loads(r.read()))


def titan(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TITAN_BROKER": cluster.broker_addr})


def service(c: Any, sid: str) -> dict[str, Any]:
    return next((s for s in c.services() if s["id"] == sid), {})


def ready(c: Any, sid: str) -> dict[str, Any] | None:
    s = service(c, sid)
    return s if s.get("state") == "READY" else None


def submit(c: Any, tmp_path: Path, name: str, jobs: list[dict[str, Any]], scripts: dict[str, str]) -> str:
    return str(c.submit_yaml(write_pipeline(tmp_path / name, {"name": name, "jobs": jobs}, scripts)).run_id)


def test_http_service_answers_on_the_reported_port_is_listed_and_stops_for_good(make_cluster, tmp_path):
    cluster = make_cluster(workers=2)
    with cluster.client() as c:
        run_id = submit(c, tmp_path, "web", [{"id": "web", "type": "service", "file": "web.py", "port": 0,
                                              "stop_grace": 3}], {"web.py": HTTP_PY})
        sid = f"{run_id}/web"
        wait_until(lambda: ready(c, sid), timeout=30, what="the service to be READY")
        out = titan(cluster, "services", "--json")
        assert out.returncode == 0, out.stderr
        row = next(s for s in json.loads(out.stdout) if s["id"] == sid)
        port = row["port"]
        assert row["state"] == "READY" and row["worker"] in ("worker1", "worker2") and row["address"].endswith(f":{port}")
        assert row["host"] == socket.gethostname() and row["restarts"] == 0
        doc = get(port)
        assert doc["port"] == port and doc["also"] == str(port) and row["pid"] == doc["pid"]
        listed = {w["id"]: w for w in c.workers()}[row["worker"]]
        assert [run_id, "web"] in listed["running"]
        text = titan(cluster, "services")
        assert sid in text.stdout and "READY" in text.stdout and str(port) in text.stdout

        t0 = time.monotonic()
        out = titan(cluster, "stop", "web")  # a bare job id, unambiguous
        assert out.returncode == 0 and "STOPPED" in out.stdout, out.stdout + out.stderr
        wait_until(lambda: not listening(port), timeout=3 + 2, what="the port to close within stop_grace")
        assert time.monotonic() - t0 < 3 + 2
        wait_until(lambda: process_gone(doc["pid"]), timeout=5, what="the service process to end")
        time.sleep(3)  # longer than any restart backoff: it never comes back
        st = c.status(run_id)
        assert st["jobs"]["web"]["state"] == "STOPPED" and st["jobs"]["web"]["attempts"] == 1
        assert st["state"] == "SUCCEEDED" and not listening(port)
        assert service(c, sid)["state"] == "STOPPED"
        assert titan(cluster, "stop", sid).returncode == 2  # already stopped: a clear error


def _gaps(attempts: list[dict[str, Any]]) -> list[float]:
    return [b["dispatched_at"] - a["finished_at"] for a, b in zip(attempts, attempts[1:], strict=False)]


def test_crash_loop_restarts_with_growing_gaps_then_fails_with_the_log_tail(make_cluster, tmp_path):
    cluster = make_cluster(workers=1)
    with cluster.client() as c:
        run_id = submit(c, tmp_path, "crash", [
            {"id": "crash", "type": "service", "file": "crash.py", "max_restarts": 3, "health": "none"},
            {"id": "always", "type": "service", "file": "crash.py", "args": "0", "restart": "always",
             "health": "none"},
            {"id": "never", "type": "service", "file": "crash.py", "restart": "never", "health": "none"},
        ], {"crash.py": CRASH_PY})
        wait_until(lambda: job_state(c, run_id, "crash") == "FAILED", timeout=60, what="the crash loop to end")
        st = c.status(run_id)["jobs"]
        crash = st["crash"]
        log = crash["attempts_log"]
        assert crash["attempts"] == 4 and crash["restarts"] == 3, crash
        gaps = _gaps(log)
        assert [round(g) for g in gaps] == [1, 2, 4], gaps  # 1, 2, 4 s from the attempts' timestamps
        assert all(b > a for a, b in zip(gaps, gaps[1:], strict=False))
        assert "crash loop" in crash["error"] and "last exit code 1" in crash["error"]
        row = service(c, f"{run_id}/crash")
        assert row["state"] == "FAILED" and any("boom: giving up" in line for line in row["log_tail"])
        out = titan(cluster, "services")
        assert "crash loop" in out.stdout and "boom: giving up" in out.stdout
        # restart: always restarts a clean exit 0; never does not restart a failure
        assert st["always"]["attempts"] >= 3 and all(a["exit_code"] == 0 for a in st["always"]["attempts_log"][:-1])
        assert st["never"]["state"] == "FAILED" and st["never"]["attempts"] == 1
        assert "restart: never" in st["never"]["error"]
        c.stop_service(f"{run_id}/always")
        wait_until(lambda: c.status(run_id)["state"] != "RUNNING", timeout=30, what="the run to end")
        assert c.status(run_id)["state"] == "FAILED"
        logs = c.logs(run_id, "crash")
        assert logs.count("starting, then failing") == 4


def test_dag_client_starts_after_the_server_is_healthy_and_reaches_it_on_port(make_cluster, tmp_path):
    cluster = make_cluster(workers=2)
    slow_http = "import time\ntime.sleep(2)\n" + HTTP_PY  # not listening for 2 s: READY comes late
    with cluster.client() as c:
        run_id = submit(c, tmp_path, "dag", [
            {"id": "server", "type": "service", "file": "server.py", "health": {"http": "/"}},
            {"id": "client", "file": "client.py", "depends_on": ["server"]},
        ], {"server.py": slow_http, "client.py": CLIENT_PY})
        wait_until(lambda: job_state(c, run_id, "client") == "COMPLETED", timeout=60, what="the client to complete")
        st = c.status(run_id)["jobs"]
        server_ready = st["server"]["service"]["ready_at"]
        assert st["client"]["attempts_log"][0]["dispatched_at"] >= server_ready
        assert st["server"]["started_at"] + 1.5 <= server_ready  # it was not READY while it slept
        out = "\n".join(c.logs(run_id, "client"))
        assert f'"port": {st["server"]["service"]["port"]}' in out and "server said" in out
        c.stop_service(f"{run_id}/server")
        assert c.wait(run_id, timeout=30)["state"] == "SUCCEEDED"


def test_killed_worker_service_is_ready_elsewhere_and_a_broker_restart_adopts_it(make_cluster, tmp_path):
    cluster = make_cluster(workers=2)
    with cluster.client(timeout=5) as c:
        run_id = submit(c, tmp_path, "ha", [{"id": "web", "type": "service", "file": "web.py"}], {"web.py": HTTP_PY})
        sid = f"{run_id}/web"
        first = wait_until(lambda: ready(c, sid), timeout=30, what="READY")
        cluster.procs[first["worker"]].kill()
        detected = wait_until(lambda: (s := service(c, sid)) and s["worker"] != first["worker"] and time.time(),
                              timeout=15, what="the broker to notice the dead worker")
        second = wait_until(lambda: ready(c, sid), timeout=10, what="READY on the other worker")
        assert second["worker"] != first["worker"] and time.time() - detected < 5
        assert get(second["port"])["pid"] == second["pid"] != first["pid"]
        wait_until(lambda: process_gone(first["pid"]), timeout=10, what="the orphan to be reaped")

        cluster.procs["broker"].kill()
        time.sleep(1.0)
        cluster.start_broker()
        again = wait_until(lambda: ready(c, sid), timeout=30, what="the service after the broker restart")
        assert again["pid"] == second["pid"] and again["worker"] == second["worker"]
        assert get(second["port"])["pid"] == second["pid"]  # the same process, adopted
        assert c.status(run_id)["jobs"]["web"]["attempts"] == 2
        c.stop_service(sid)


def test_a_taken_port_is_a_clear_error_without_a_restart_storm(make_cluster, tmp_path):
    cluster = make_cluster(workers=1)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with cluster.client() as c:
            run_id = submit(c, tmp_path, "taken", [{"id": "web", "type": "service", "file": "web.py", "port": port,
                                                    "restart": "always"}], {"web.py": HTTP_PY})
            wait_until(lambda: job_state(c, run_id, "web") == "FAILED", timeout=30, what="the refusal")
            time.sleep(2)
            job = c.status(run_id)["jobs"]["web"]
            assert job["attempts"] == 1, job  # no restart storm
            assert f"port {port} is already in use" in job["error"]
            assert any(f"port {port} is already in use" in line for line in c.logs(run_id, "web"))
            out = titan(cluster, "services")
            assert f"port {port} is already in use" in out.stdout
