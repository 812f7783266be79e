"""`titan run --json` prints the submission document at once, and the final one with --wait (issue 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.test_cli import titan
from tests.helpers import PIPELINES, write_pipeline


@pytest.mark.timeout(120)
def test_run_json_without_wait_prints_the_submission_at_once(cluster, tmp_path: Path):
    # nobody can run this job: a command that waited for the run would never return
    path = write_pipeline(tmp_path, {"name": "gpu-later", "jobs": [
        {"id": "train", "command": ["true"], "requirement": "GPU_NOBODY_HAS"}]})
    out = titan("run", str(path), "--json", broker=cluster.broker_addr, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["run_id"] == out.stderr.strip() and doc["state"] == "RUNNING"
    assert set(doc["jobs"]) == {"train"} and doc["jobs"]["train"]["state"] == "QUEUED"
    titan("cancel", doc["run_id"], broker=cluster.broker_addr)


@pytest.mark.timeout(120)
def test_run_json_with_wait_prints_the_final_document(cluster):
    out = titan("run", str(PIPELINES / "diamond" / "diamond.yaml"), "--json", "--wait", broker=cluster.broker_addr)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == "SUCCEEDED"
