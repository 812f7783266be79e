"""`titan bench` keeps working: its smallest scenarios run and report (timings are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import REPO


def bench(tmp_path: Path, *scenarios: str) -> tuple[dict[str, Any], str]:
    """Run `titan bench --quick --only ...`; its JSON document and its stdout."""
    out_file = tmp_path / "bench.json"
    only = [arg for name in scenarios for arg in ("--only", name)]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the bench's clusters live under tmp_path, and only they
    out = subprocess.run([sys.executable, "-m", "client.cli", "bench", "--quick", *only, "--json", str(out_file)],
                         capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out_file.read_text())
    assert doc["machine"]["cpus"] >= 1 and doc["quick"] is True
    assert list(doc["scenarios"]) == list(scenarios), out.stdout
    return doc, out.stdout


def test_bench_quick_smallest_scenario_runs_and_reports(tmp_path: Path):
    doc, stdout = bench(tmp_path, "single-true")
    row = doc["scenarios"]["single-true"]
    assert {"value", "unit", "floor", "ratio", "overhead_ms"} <= set(row)
    assert row["value"] > 0 and row["floor"] > 0 and row["n"] >= 10
    assert "single-true" in stdout
    # by their data dirs, not by "titan_zmq" in the command line: other tests may run clusters meanwhile
    leftovers = [p for p in psutil.process_iter(["pid", "cmdline"])
                 if any(str(tmp_path) in part for part in (p.info["cmdline"] or []))]
    assert not leftovers, leftovers


def test_bench_startup_compares_the_job_interpreter_with_a_clean_venv(tmp_path: Path):
    doc, stdout = bench(tmp_path, "startup")
    row = doc["scenarios"]["startup"]
    assert row["interpreter"] == sys.executable  # the workers', who run under the bench's Python
    assert row["value"] > 0 and row["floor"] > 0 and row["n"] >= 10
    assert row["overhead_ms"] == pytest.approx(row["value"] - row["floor"])
    assert row["ratio"] == pytest.approx(row["value"] / row["floor"])
    assert "startup" in stdout
    # unlike the timings, this is deterministic: an editable install's import hook slows every Python job
    hooks = [f for f in row["extra_finders"] if "__editable__" in f]
    assert not hooks, f"the job interpreter loads {hooks} at start-up: install with `make install` (compat mode)"
