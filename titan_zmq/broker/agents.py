"""Agent runs: the runs an agent submitted under one ``agent_run_id``, as one timeline of stages.

An index (agent run id -> its run ids in submission order) kept by the scheduler makes one agent run's
view cost O(its runs), whatever the number of runs the broker keeps. An agent run is RUNNING while any
stage runs, FAILED once any stage ended otherwise than SUCCEEDED, else SUCCEEDED.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from titan_zmq.broker.records import RunRecord
from titan_zmq.errors import NotFound
from titan_zmq.states import RunState

PendingGates = Callable[[RunRecord], list[str]]


class AgentRuns:
    """Agent run id -> run ids, in submission order."""

    def __init__(self) -> None:
        self.by_agent: dict[str, list[str]] = {}

    def add(self, run: RunRecord) -> None:
        if run.agent_run_id:
            self.by_agent.setdefault(run.agent_run_id, []).append(run.run_id)

    def remove(self, run: RunRecord) -> None:
        ids = self.by_agent.get(run.agent_run_id or "")
        if ids is not None and run.run_id in ids:
            ids.remove(run.run_id)
            if not ids:
                del self.by_agent[run.agent_run_id or ""]

    def stages(self, runs: Mapping[str, RunRecord], agent_run_id: str) -> list[RunRecord]:
        ids = self.by_agent.get(agent_run_id)
        if not ids:
            raise NotFound(f"unknown agent run {agent_run_id!r} (no run kept has this agent_run_id)")
        return [runs[r] for r in ids if r in runs]

    def summaries(self, runs: Mapping[str, RunRecord], limit: int) -> list[dict[str, Any]]:
        """Every agent run, the most recently active first, at most ``limit``."""
        out = [summary(agent, self.stages(runs, agent)) for agent in self.by_agent]
        out.sort(key=lambda s: (s["last_activity"], s["first_activity"]), reverse=True)
        return out[:limit]


def state(stages: list[RunRecord]) -> str:
    if any(not r.state.terminal for r in stages):
        return RunState.RUNNING.value
    if any(r.state is not RunState.SUCCEEDED for r in stages):
        return RunState.FAILED.value
    return RunState.SUCCEEDED.value


def summary(agent_run_id: str, stages: list[RunRecord]) -> dict[str, Any]:
    return {
        "agent_run_id": agent_run_id, "stages": len(stages), "state": state(stages),
        "first_activity": min(r.created_at for r in stages),
        "last_activity": max(r.finished_at or r.created_at for r in stages),
    }


def detail(agent_run_id: str, stages: list[RunRecord], pending: PendingGates, now: float) -> dict[str, Any]:
    """The agent run and its stages in submission order, each with its state, duration and waiting gates."""
    out = summary(agent_run_id, stages)
    out["stages"] = [{
        **r.summary(), "stage": i,
        "duration": (r.finished_at or now) - r.created_at,
        "gates_pending": pending(r),
    } for i, r in enumerate(stages, 1)]
    out["gates_pending"] = sum(len(s["gates_pending"]) for s in out["stages"])
    return out
