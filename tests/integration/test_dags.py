"""DAG runs end to end on real processes: ordering, exactly-once, independent re-submissions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.helpers import PIPELINES, RECORD_PY, events, write_pipeline


def test_diamond_sink_starts_after_both_branches_and_each_job_runs_once(cluster, client, tmp_path: Path):
    doc = {"name": "diamond", "jobs": [
        {"id": "a", "file": "record.py", "args": "a 0.2"},
        {"id": "b", "file": "record.py", "args": "b 0.5", "depends_on": ["a"]},
        {"id": "c", "file": "record.py", "args": "c 0.1", "depends_on": ["a"]},
        {"id": "d", "file": "record.py", "args": "d", "depends_on": ["b", "c"]},
    ]}
    path = write_pipeline(tmp_path, doc, {"record.py": RECORD_PY})
    run = client.submit_yaml(path)
    st = run.wait(timeout=60)
    assert st["state"] == "SUCCEEDED", st
    ev = events(cluster, run.run_id)
    starts = Counter(name for name, what, *_ in ev if what == "start")
    assert starts == {"a": 1, "b": 1, "c": 1, "d": 1}, ev
    t = {(name, what): ts for name, what, ts, *_ in ev}
    assert t["d", "start"] >= t["b", "end"] and t["d", "start"] >= t["c", "end"]
    assert t["b", "start"] >= t["a", "end"] and t["c", "start"] >= t["a", "end"]
    for job in st["jobs"].values():
        assert job["attempts"] == 1 and job["exit_code"] == 0


def test_fan_in_collector_runs_exactly_once_per_run(cluster, client):
    runs = [client.submit_yaml(PIPELINES / "mapreduce" / "mapreduce.yaml") for _ in range(5)]
    for run in runs:
        st = run.wait(timeout=120)
        assert st["state"] == "SUCCEEDED", st
        assert len(st["jobs"]) == 22
        # the collector must run exactly once (reduce.runs in the shared directory went with the run)
        assert st["jobs"]["reduce"]["attempts"] == 1
        assert st["jobs"]["reduce"]["started_at"] >= max(
            j["finished_at"] for k, j in st["jobs"].items() if k.startswith("map-"))
        assert "7000 words" in client.logs(run.run_id, "reduce")[0]
        summary = client.status(run.run_id, summary=True)
        assert (summary["state"], summary["jobs"], summary["counts"]) == ("SUCCEEDED", 22, {"COMPLETED": 22})


def test_resubmitting_the_same_pipeline_gives_independent_runs(cluster, client, tmp_path: Path):
    doc = {"name": "twice", "jobs": [{"id": "only", "file": "say.py"}]}
    path = write_pipeline(tmp_path, doc, {"say.py": "import os; print('run', os.environ['TITAN_RUN_ID'])\n"})
    first, second = client.submit_yaml(path), client.submit_yaml(path)
    assert first.run_id != second.run_id
    for run in (first, second):
        assert run.wait(timeout=60)["state"] == "SUCCEEDED"
        assert client.logs(run.run_id, "only") == [f"run {run.run_id}"]
    client.cancel(first.run_id)  # a finished run: nothing changes, the other is untouched
    assert client.status(second.run_id)["state"] == "SUCCEEDED"
    assert client.status(first.run_id)["state"] == "SUCCEEDED"


def test_a_job_adds_two_jobs_to_its_own_run_and_the_run_waits_for_them(client):
    run = client.submit_yaml(PIPELINES / "dynamic" / "dynamic.yaml")
    st = run.wait(timeout=60)
    assert st["state"] == "SUCCEEDED", st
    assert set(st["jobs"]) == {"planner", "child-1", "child-2"}
    assert st["finished_at"] >= st["jobs"]["child-2"]["finished_at"]
    assert st["jobs"]["child-2"]["started_at"] >= st["jobs"]["child-1"]["finished_at"]
    assert client.logs(run.run_id, "child-2") == [f"child ['two'] of run {run.run_id}"]


def test_etl_hands_values_through_the_store(client):
    run = client.submit_yaml(PIPELINES / "etl" / "etl.yaml")
    assert run.wait(timeout=60)["state"] == "SUCCEEDED"
    assert client.logs(run.run_id, "load") == ["loaded 4 rows; warmest: Pune at 88.2 F"]
    clean = client.store_get(f"etl/{run.run_id}/clean")
    assert isinstance(clean, str) and '"temp_f": 40.1' in clean


def test_args_with_quotes_and_spaces_arrive_as_argv_inline_and_project(client, tmp_path: Path):
    script = "import json, sys; print(json.dumps(sys.argv[1:]))\n"
    args = "--greeting 'hello world' plain \"double quoted\" 'it''s'"
    expected = '["--greeting", "hello world", "plain", "double quoted", "its"]'
    inline = write_pipeline(tmp_path / "inline", {"name": "args", "jobs": [
        {"id": "echo", "file": "echo.py", "args": args}]}, {"echo.py": script})
    project = write_pipeline(tmp_path / "project", {"name": "args-project", "project": True, "jobs": [
        {"id": "echo", "file": "bin/echo.py", "args": args},
        {"id": "list", "file": "bin/echo.py", "args": ["a b", "c'd", 'e"f']}]}, {"bin/echo.py": script})
    for path in (inline, project):
        run = client.submit_yaml(path)
        assert run.wait(timeout=60)["state"] == "SUCCEEDED"
        assert client.logs(run.run_id, "echo") == [expected]
    assert client.logs(run.run_id, "list") == ['["a b", "c\'d", "e\\"f"]']
    run = client.submit_yaml(PIPELINES / "project" / "project.yaml")
    assert run.wait(timeout=60)["state"] == "SUCCEEDED"
    assert client.logs(run.run_id, "main") == [
        'argv: ["--greeting", "hello world", "plain", "double quoted"]', "PROJECT MODE WORKS!"]
