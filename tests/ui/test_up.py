"""`titan up` and `make demo` (`titan demo`) start the web UI as its own process and print its URL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.helpers import PIPELINES, REPO, process_gone, wait_until
from tests.ui.conftest import http_status

TITAN = [sys.executable, "-m", "client.cli"]
pytestmark = pytest.mark.timeout(150)


def read_until(proc: subprocess.Popen[str], marker: str) -> str:
    """The output up to and including the first line containing ``marker`` (fails if the process ends)."""
    assert proc.stdout is not None
    seen = ""
    for line in proc.stdout:
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"{marker!r} never printed; output:\n{seen}")


def check_ui(url: str) -> None:
    wait_until(lambda: http_status(url) == 200, timeout=30, interval=0.2, what=f"the UI at {url}")
    assert http_status(url.split("?")[0]) == 403  # without its token


def stop(proc: subprocess.Popen[str], sig: int) -> str:
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(sig)
    assert proc.stdout is not None
    rest = proc.stdout.read()
    assert proc.wait(timeout=40) == 0, rest
    wait_until(lambda: all(process_gone(c.pid) for c in children), timeout=10, what="every child gone")
    return rest


def test_titan_up_serves_the_ui_on_base_port_plus_3(tmp_path: Path) -> None:
    proc = subprocess.Popen([*TITAN, "up", "--workers", "1", "--data-dir", str(tmp_path), "--base-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            start_new_session=True)
    try:
        seen = read_until(proc, "ui      http://")
        broker = next(ln.split()[1] for ln in seen.splitlines() if ln.startswith("broker  "))
        url = seen.splitlines()[-1].split()[1]
        assert url.startswith(f"http://127.0.0.1:{int(broker.rsplit(':', 1)[1]) + 3}/?token=")
        check_ui(url)
        assert "cluster stopped" in stop(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_demo_keeps_the_cluster_and_ui_up_until_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen([*TITAN, "demo", str(PIPELINES / "etl" / "etl.yaml"), "--data-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            start_new_session=True)
    try:
        seen = read_until(proc, "Ctrl-C stops the cluster")
        assert "SUCCEEDED" in seen
        url = seen.splitlines()[-1].split()[1]
        check_ui(url)
        stop(proc, signal.SIGINT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_public_bind_without_a_token_is_refused_with_a_clear_error() -> None:
    out = subprocess.run([sys.executable, "-m", "ui", "--bind", "0.0.0.0:1"], capture_output=True, text=True,
                         timeout=30, cwd=REPO)
    assert out.returncode == 2
    assert "exposes the UI beyond this machine: give an explicit --token" in out.stderr
