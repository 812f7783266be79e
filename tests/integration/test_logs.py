"""Logs: complete and ordered whatever a job prints; live followers; bounded memory."""

from __future__ import annotations

import threading
from pathlib import Path

import psutil

from client import TitanClient
from tests.helpers import write_pipeline


def test_100k_lines_all_returned_in_order_with_bounded_memory(make_cluster, tmp_path: Path):
    cluster = make_cluster(workers=1)
    broker = psutil.Process(cluster.procs["broker"].pid)
    worker = psutil.Process(cluster.procs["worker1"].pid)
    base = {"broker": broker.memory_info().rss, "worker": worker.memory_info().rss}
    peak = dict(base)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak["broker"] = max(peak["broker"], broker.memory_info().rss)
            peak["worker"] = max(peak["worker"], worker.memory_info().rss)

    path = write_pipeline(tmp_path, {"name": "loud", "jobs": [{"id": "loud", "file": "loud.py"}]}, {
        "loud.py": "import sys\nfor i in range(100_000):\n    sys.stdout.write(f'line {i:06d} ' + 'x' * 60 + '\\n')\n"})
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with cluster.client() as c:
        run = c.submit_yaml(path)
        assert run.wait(timeout=120)["state"] == "SUCCEEDED"
        lines = c.logs(run.run_id, "loud")
    stop.set()
    sampler.join()
    assert len(lines) == 100_000
    assert lines[0].startswith("line 000000 ") and lines[-1].startswith("line 099999 ")
    assert all(line.startswith(f"line {i:06d} ") for i, line in enumerate(lines))
    grew = {k: (peak[k] - base[k]) / 2**20 for k in base}
    # 100k lines are ~7 MiB of text; neither process may hold a job's whole output
    assert grew["broker"] < 40 and grew["worker"] < 40, grew


def test_follower_gets_backlog_then_live_lines_and_stops_when_the_job_ends(cluster, client, tmp_path: Path):
    script = "import time\nfor i in range(30):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.05)\n"
    path = write_pipeline(tmp_path, {"name": "ticks", "jobs": [{"id": "ticks", "file": "ticks.py"}]},
                          {"ticks.py": script})
    run = client.submit_yaml(path)
    got = [rec[3] for rec in client.follow_logs(run.run_id, "ticks", timeout=60)]
    assert got == [f"tick {i}" for i in range(30)]
    # a follower that joins after the end gets the whole backlog and returns at once
    with TitanClient(cluster.broker_addr) as late:
        assert [r[3] for r in late.follow_logs(run.run_id, "ticks", timeout=10)] == got


def test_follower_across_retries_sees_every_attempt(client, tmp_path: Path):
    script = "import os, sys\na = int(os.environ['TITAN_ATTEMPT'])\nprint(f'attempt {a}')\nsys.exit(0 if a == 2 else 1)\n"
    path = write_pipeline(tmp_path, {"name": "retry-follow", "jobs": [{"id": "r", "file": "r.py", "retries": 2}]},
                          {"r.py": script})
    run = client.submit_yaml(path)
    got = [(rec[1], rec[3]) for rec in client.follow_logs(run.run_id, "r", timeout=60)]
    assert got == [(1, "attempt 1"), (2, "attempt 2")]
