"""`titan bench` keeps working: its smallest scenario runs and reports (timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil

from tests.helpers import REPO


def test_bench_quick_smallest_scenario_runs_and_reports(tmp_path: Path):
    out_file = tmp_path / "bench.json"
    before = {p.pid for p in psutil.process_iter()}
    out = subprocess.run([sys.executable, "-m", "client.cli", "bench", "--quick", "--only", "single-true",
                          "--json", str(out_file)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out_file.read_text())
    assert doc["machine"]["cpus"] >= 1 and doc["quick"] is True
    row = doc["scenarios"]["single-true"]
    assert {"value", "unit", "floor", "ratio", "overhead_ms"} <= set(row)
    assert row["value"] > 0 and row["floor"] > 0 and row["n"] >= 10
    assert "single-true" in out.stdout
    leftovers = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.pid not in before
                 and any("titan_zmq" in part for part in (p.info["cmdline"] or []))]
    assert not leftovers, leftovers
