"""The UI's model (no sockets): events and replies in, versions and views out; and the UI's access rules."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from titan_zmq.errors import InvalidRequest
from ui import auth
from ui.__main__ import parse_bind
from ui.model import Model


def summary(run_id: str, state: str = "RUNNING", created: float = 1.0, agent: str | None = None,
            **counts: int) -> dict[str, Any]:
    return {"run_id": run_id, "name": run_id.split("-")[0], "agent_run_id": agent, "state": state,
            "created_at": created, "finished_at": None, "jobs": sum(counts.values()), "counts": counts}


def test_versions_move_only_when_something_changed() -> None:
    m = Model()
    m.set_runs([summary("a-1", QUEUED=2)])
    v = m.version("runs")
    m.set_runs([summary("a-1", QUEUED=2)])  # the same summary again: nothing to re-render
    assert m.version("runs") == v
    m.set_runs([summary("a-1", QUEUED=1, RUNNING=1)])
    assert m.version("runs") > v
    m.set_workers([{"id": "w1", "running": []}])
    before = m.version("workers")
    m.set_workers([{"id": "w1", "running": []}])
    assert m.version("workers") == before


def test_a_job_event_marks_its_run_dirty_and_updates_a_watched_run_at_once() -> None:
    m = Model()
    m.set_runs([summary("r-1", PENDING=1, QUEUED=1)])
    m.on_job_event({"run_id": "r-1", "job_id": "a", "state": "RUNNING", "attempts": 1, "worker": "w1"})
    assert m.take_dirty() == ["r-1"]
    assert m.run("r-1").counts == {"PENDING": 1, "QUEUED": 1}  # not watched: the summary will tell
    m.watch("r-1")
    assert m.status_due("r-1", 0.0, 2.0) is True and m.jobs("r-1") is None
    m.set_status({**summary("r-1"), "jobs": {"a": {"state": "QUEUED", "depends_on": []},
                                             "b": {"state": "PENDING", "depends_on": ["a"]}}})
    v = m.run_version("r-1")
    m.on_job_event({"run_id": "r-1", "job_id": "a", "state": "RUNNING", "attempts": 1, "worker": "w1"})
    assert m.run_version("r-1") > v
    assert m.jobs("r-1")["a"]["state"] == "RUNNING"  # type: ignore[index]
    assert m.run("r-1").counts == {"RUNNING": 1, "PENDING": 1}  # type: ignore[union-attr]
    assert m.status_due("r-1", m.watched["r-1"].loaded_at + 0.5, 2.0) is False
    assert m.status_due("other", 0.0, 2.0) is None


def test_a_new_run_event_adds_the_run_and_filters_and_pages_work() -> None:
    m = Model()
    m.set_runs([summary(f"bulk-{i}", "SUCCEEDED", created=float(i), COMPLETED=1) for i in range(120)])
    m.on_run_event({"run_id": "alpha-1", "name": "alpha", "agent_run_id": "ag", "state": "RUNNING",
                    "created_at": 500.0, "finished_at": None})
    assert m.take_dirty() == ["alpha-1"]
    rows, total = m.list_runs(offset=0, limit=50)
    assert total == 121 and rows[0].run_id == "alpha-1" and rows[1].run_id == "bulk-119"
    rows, _ = m.list_runs(offset=100, limit=50)
    assert [r.run_id for r in rows][-1] == "bulk-0" and len(rows) == 21
    assert [r.run_id for r in m.list_runs(name="ALPHA")[0]] == ["alpha-1"]
    assert [r.run_id for r in m.list_runs(agent="ag")[0]] == ["alpha-1"]
    assert m.list_runs(state="FAILED")[1] == 0
    assert m.active_runs() == ["alpha-1"]


def test_agent_groups_keep_submission_order() -> None:
    m = Model()
    m.set_runs([summary("c-3", created=3.0, agent="A"), summary("a-1", created=1.0, agent="A"),
                summary("x-2", created=2.0, agent="B"), summary("b-2", created=2.5, agent="A"),
                summary("solo-9", created=9.0)])
    groups = m.agent_groups()
    assert [g for g, _ in groups] == ["A", "B"]
    assert [r.run_id for r in groups[0][1]] == ["a-1", "b-2", "c-3"]


def test_only_the_newest_runs_are_kept() -> None:
    m = Model(runs_kept=10)
    m.set_runs([summary(f"r-{i}", created=float(i)) for i in range(25)])
    assert sorted(m.runs) == sorted(f"r-{i}" for i in range(15, 25))


def test_the_connection_state_says_since_when_the_broker_is_gone() -> None:
    m = Model()
    assert m.broker_up(100.0) is True and m.broker_up(101.0) is False
    v = m.version("conn")
    m.broker_down(105.0, "no answer")
    assert not m.conn.up and m.conn.since == 101.0 and m.version("conn") > v
    v = m.version("conn")
    m.broker_down(107.0, "no answer")  # still down: nothing new to show
    assert m.version("conn") == v
    assert m.broker_up(110.0) is True and m.conn.since is None


def test_the_token_guard_refuses_requests_without_the_token() -> None:
    server = Flask("t")
    server.add_url_rule("/", "index", lambda: "ok")
    server.add_url_rule("/_dash-update-component", "cb", lambda: "ok", methods=["POST"])
    auth.install(server, "s3cret", 8050)
    web = server.test_client()
    assert web.get("/").status_code == 403
    assert web.post("/_dash-update-component").status_code == 403
    assert web.get("/?token=nope").status_code == 403
    assert web.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = web.get("/?token=s3cret")
    assert first.status_code == 200 and "titan_ui_token_8050=s3cret" in first.headers["Set-Cookie"]
    assert "HttpOnly" in first.headers["Set-Cookie"]
    assert web.post("/_dash-update-component").status_code == 200  # from the cookie alone


def test_a_public_bind_needs_an_explicit_token() -> None:
    auth.check_bind("127.0.0.1", None)
    auth.check_bind("localhost", None)
    auth.check_bind("::1", None)
    auth.check_bind("0.0.0.0", "chosen")
    with pytest.raises(InvalidRequest, match="explicit --token"):
        auth.check_bind("0.0.0.0", None)
    with pytest.raises(InvalidRequest, match="explicit --token"):
        auth.check_bind("10.1.2.3", None)
    assert parse_bind("127.0.0.1:8050") == ("127.0.0.1", 8050)
    assert parse_bind("[::1]:9000") == ("::1", 9000)
    assert parse_bind("8051") == ("127.0.0.1", 8051)
    with pytest.raises(InvalidRequest):
        parse_bind("127.0.0.1:http")
