"""The broker's own checks of a submission's name, agent run id and job counts (no sockets: the parts it
would need after refusing are left out, so a request that got past the checks would fail loudly)."""

from __future__ import annotations

from typing import Any

import pytest

from titan_zmq import defaults
from titan_zmq.broker.api import ClientApi
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.errors import InvalidRequest
from titan_zmq.jobspec import parse_jobs
from titan_zmq.protocol import Message, Op


def api(sched: Scheduler | None = None) -> ClientApi:
    none: Any = None
    return ClientApi(sched or Scheduler(), none, none, none, none, none, dict, lambda: None)


def jobs(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "command": ["true"]} for i in ids]


@pytest.mark.parametrize(("body", "needle"), [
    ({"name": "n" * (defaults.MAX_NAME_CHARS + 1), "jobs": jobs("a")}, "name: expected non-empty string of at most"),
    ({"name": "x" * 10_000_000, "jobs": jobs("a")}, "name: expected non-empty string of at most"),
    ({"name": "ok", "agent_run_id": "a" * 1000, "jobs": jobs("a")}, "agent_run_id: expected non-empty string"),
    ({"name": "a\x00b", "jobs": jobs("a")}, "name: expected"),
])
def test_submit_dag_refuses_names_over_the_cap(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle) as info:
        api().on_submit_dag(b"client", Message(Op.SUBMIT_DAG, {"rid": 1, **body}))
    assert len(str(info.value)) < 300


def test_submit_job_refuses_a_long_name() -> None:
    body = {"rid": 1, "name": "n" * 5000, "job": jobs("a")[0]}
    with pytest.raises(InvalidRequest, match="name: expected"):
        api().on_submit_job(b"client", Message(Op.SUBMIT_JOB, body))


def test_add_jobs_is_capped_per_run_counting_the_jobs_already_in_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "MAX_JOBS_PER_RUN", 5)
    sched = Scheduler()
    sched.submit("r1", "r", parse_jobs(jobs("a", "b", "c")), 0.0)
    msg = Message(Op.ADD_JOBS, {"rid": 1, "run_id": "r1", "jobs": jobs("d", "e", "f")})
    with pytest.raises(InvalidRequest, match="run r1 has 3 jobs: 3 more would pass the cap of 5 jobs per run"):
        api(sched).on_add_jobs(b"client", msg)


def test_add_jobs_is_capped_per_submission() -> None:
    msg = Message(Op.ADD_JOBS, {"rid": 1, "run_id": "r1", "jobs": [{}] * (defaults.MAX_JOBS_PER_SUBMISSION + 1)})
    with pytest.raises(InvalidRequest, match="over the cap of 20000 per submission"):
        api().on_add_jobs(b"client", msg)
