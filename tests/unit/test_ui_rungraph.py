"""The Run page's pure parts: DAG layers and the grouped view, the timeline's lanes, job versions in the model."""

from __future__ import annotations

from typing import Any

from titan_zmq.states import JobState
from ui import rungraph, timeline, widgets
from ui.model import Model


def dag(**deps: list[str]) -> dict[str, dict[str, Any]]:
    return {j: {"state": "PENDING", "depends_on": ps} for j, ps in deps.items()}


def test_layers_follow_the_longest_path_and_ignore_unknown_parents() -> None:
    jobs = dag(a=[], b=["a"], c=["a"], d=["b", "c"], e=["a", "d"], lone=[], odd=["missing"])
    assert rungraph.layers(jobs) == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 3, "lone": 0, "odd": 0}
    lay = rungraph.layout(jobs)
    assert lay.by_layer == [["a", "lone", "odd"], ["b", "c"], ["d"], ["e"]]
    assert lay.order == ["a", "lone", "odd", "b", "c", "d", "e"]
    xs = [lay.pos[j][0] for j in ("a", "b", "d", "e")]
    assert xs == sorted(xs) and len(set(xs)) == 4  # left to right by depth


def test_a_wide_layer_wraps_into_columns_and_children_follow_their_parents() -> None:
    jobs = dag(root=[], **{f"w{i:03}": ["root"] for i in range(60)})
    lay = rungraph.layout(jobs)
    columns = {lay.pos[f"w{i:03}"][0] for i in range(60)}
    assert len(columns) == 3  # 60 jobs, 25 per column
    assert max(abs(lay.pos[f"w{i:03}"][1]) for i in range(60)) <= rungraph.ROWS_PER_COLUMN * rungraph.ROW_GAP / 2
    # barycentre: a child of the last parent is drawn below a child of the first
    two = dag(p1=[], p2=[], c2=["p2"], c1=["p1"])
    lay2 = rungraph.layout(two)
    assert lay2.by_layer[1] == ["c1", "c2"]


def test_detail_elements_put_node_i_at_order_i_and_an_edge_per_dependency() -> None:
    jobs = dag(a=[], b=["a"], c=["a"], d=["b", "c"])
    lay = rungraph.layout(jobs)
    els = rungraph.detail_elements(jobs, lay)
    assert [e["data"]["id"] for e in els[:4]] == lay.order
    assert sorted(e["data"]["id"] for e in els[4:]) == ["a->b", "a->c", "b->d", "c->d"]


def test_the_grouped_view_counts_each_layers_states_and_expands_a_layer() -> None:
    jobs: dict[str, dict[str, Any]] = {"root": {"state": "COMPLETED", "depends_on": []}}
    for i in range(300):
        jobs[f"m{i}"] = {"state": "COMPLETED" if i < 200 else "RUNNING" if i < 210 else "QUEUED",
                         "depends_on": ["root"]}
    jobs["sink"] = {"state": "PENDING", "depends_on": [f"m{i}" for i in range(300)]}
    lay = rungraph.layout(jobs)
    els = rungraph.grouped_elements(jobs, lay)
    nodes = {e["data"]["id"]: e["data"] for e in els if "source" not in e["data"]}
    assert {n: d["count"] for n, d in nodes.items()} == {
        "group:0:COMPLETED": 1, "group:1:RUNNING": 10, "group:1:QUEUED": 90, "group:1:COMPLETED": 200,
        "group:2:PENDING": 1}
    edges = {(e["data"]["source"], e["data"]["target"]): e["data"]["count"] for e in els if "source" in e["data"]}
    assert edges[("group:0:COMPLETED", "group:1:COMPLETED")] == 200
    assert edges[("group:1:QUEUED", "group:2:PENDING")] == 90
    assert len(els) == 5 + 6  # a handful of elements for 302 jobs
    opened = rungraph.grouped_elements(jobs, lay, expanded=[1])
    ids = {e["data"]["id"] for e in opened if "source" not in e["data"]}
    assert "m0" in ids and "m299" in ids and not any(i.startswith("group:1:") for i in ids)
    assert sum(1 for e in opened if "source" in e["data"] and e["data"]["target"] == "group:2:PENDING") == 300


def test_every_job_state_has_a_colour_and_a_place_in_the_legend() -> None:
    missing = [s.value for s in JobState if s.value not in widgets.JOB_COLORS]
    assert not missing, f"add a colour for {missing} to ui/widgets.py JOB_COLORS"
    assert set(widgets.job_states()) == {s.value for s in JobState}
    styled = {r["selector"] for r in rungraph.stylesheet(widgets.JOB_COLORS, widgets.UNKNOWN_COLOR)}
    assert all(f'node[state = "{s.value}"]' in styled for s in JobState)


def attempt(n: int, worker: str, start: float, end: float | None, outcome: str = "COMPLETED") -> dict[str, Any]:
    return {"attempt": n, "worker": worker, "dispatched_at": start - 0.01, "started_at": start, "finished_at": end,
            "exit_code": None if end is None else (0 if outcome == "COMPLETED" else 1), "outcome": outcome}


def test_timeline_lanes_show_parallelism_gaps_and_retries() -> None:
    jobs = {
        "a": {"attempts_log": [attempt(1, "w1", 10.0, 12.0)]},
        "b": {"attempts_log": [attempt(1, "w1", 11.0, 13.0)]},  # overlaps a: a second lane
        "c": {"attempts_log": [attempt(1, "w1", 12.5, 14.0, "FAILED"), attempt(2, "w2", 15.0, 16.0)]},
        "d": {"attempts_log": [attempt(1, "w2", 17.0, None)]},  # running: ends now
        "e": {"attempts_log": []},
    }
    got = {(b.job, b.attempt): b for b in timeline.bars(jobs, now=20.0)}
    assert got[("a", 1)].lane == "w1 · 1" and got[("b", 1)].lane == "w1 · 2"
    assert got[("c", 1)].lane == "w1 · 1"  # a's lane was free again at 12.5
    assert got[("c", 1)].outcome == "FAILED" and got[("c", 2)].lane == "w2 · 1"
    assert got[("d", 1)].running and got[("d", 1)].end == 20.0 and got[("d", 1)].lane == "w2 · 1"
    assert len(got) == 5
    fig = timeline.figure(list(got.values()), widgets.color)
    assert {t.name for t in fig.data} == {"COMPLETED", "FAILED", "RUNNING"}
    assert sum(len(t.y) for t in fig.data) == 5


def watched(m: Model, jobs: dict[str, dict[str, Any]]) -> None:
    m.watch("r")
    m.set_status({"run_id": "r", "name": "r", "state": "RUNNING", "created_at": 1.0, "finished_at": None,
                  "agent_run_id": None, "jobs": jobs})


def event(job: str, state: str, attempts: int, **more: Any) -> dict[str, Any]:
    return {"run_id": "r", "job_id": job, "state": state, "attempts": attempts, "worker": "w1",
            "dispatched_at": 5.0, "started_at": None, "finished_at": None, "exit_code": None, **more}


def test_the_model_gives_the_jobs_changed_since_a_version_and_builds_attempts_from_events() -> None:
    m = Model()
    watched(m, {j: {"state": "PENDING", "depends_on": []} for j in ("a", "b", "c")})
    shape, v0 = m.graph_version("r")
    assert m.job_changes("r", v0) == {}
    m.on_job_event(event("b", "RUNNING", 1))
    m.on_job_event(event("b", "FAILED", 1, started_at=5.1, finished_at=6.0, exit_code=3))
    m.on_job_event(event("b", "RUNNING", 2, dispatched_at=7.0))
    assert list(m.job_changes("r", v0)) == ["b"]
    assert m.graph_version("r")[0] == shape  # states changed, the graph's shape did not
    log = m.job("r", "b")["attempts_log"]  # type: ignore[index]
    assert [(a["attempt"], a["outcome"], a["exit_code"]) for a in log] == [(1, "FAILED", 3), (2, "RUNNING", None)]
    _, v1 = m.graph_version("r")
    m.on_job_event(event("c", "COMPLETED", 1, started_at=5.0, finished_at=5.5, exit_code=0))
    assert list(m.job_changes("r", v1)) == ["c"]
    assert m.watched["r"].loaded_at > 0  # every attempt's end was seen: no full status needed
    m.on_job_event(event("a", "RUNNING", 2))  # attempt 1 went by unseen (coalesced events)
    assert m.watched["r"].loaded_at == 0.0  # so the full status is asked for
    m.on_job_event(event("new", "QUEUED", 0))  # a job added while the run runs
    assert m.graph_version("r")[0] > shape
    # a full status that repeats what the events said bumps nothing
    full = m.jobs("r")
    _, v2 = m.graph_version("r")
    m.set_status({"run_id": "r", "name": "r", "state": "RUNNING", "created_at": 1.0, "finished_at": None,
                  "agent_run_id": None, "jobs": full})
    assert m.job_changes("r", v2) == {}
