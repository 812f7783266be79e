"""Capability tags are case-insensitive everywhere: worker constructor, command line, registration, jobs."""

from __future__ import annotations

from pathlib import Path

from titan_zmq.broker.actions import Dispatch
from titan_zmq.broker.scheduler import Scheduler
from titan_zmq.capabilities import normalise, tag
from titan_zmq.jobspec import parse_job
from titan_zmq.worker.agent import WorkerAgent


def test_tags_are_normalised_once_each_with_general_as_default() -> None:
    assert tag(" gpu ") == "GPU"
    assert normalise(["gpu", "GPU", "high_mem", ""]) == ["GPU", "HIGH_MEM"]
    assert normalise([]) == ["GENERAL"]


def test_a_worker_made_in_python_with_lower_case_tags_gets_a_lower_case_job(tmp_path: Path) -> None:
    agent = WorkerAgent(capabilities=["gpu"], workspace=tmp_path)
    try:
        assert agent.caps == ["GPU"]
    finally:
        agent.executor.close()
        agent.pids.close()
        agent.ctx.term()
    job = parse_job({"id": "train", "command": "true", "requirement": "gpu"})
    sched = Scheduler()
    sched.register_worker("w", agent.caps, 1, 0.0)
    actions = sched.submit("r", "r", [job], 0.0)
    assert [a.key.job_id for a in actions if isinstance(a, Dispatch)] == ["train"]
