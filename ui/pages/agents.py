"""Agent runs (``/agents``): runs grouped by ``agent_run_id``, each group its stages in submission order."""

from __future__ import annotations

import time
from typing import Any

from dash import dcc, html

from ui import widgets as w
from ui.live import LiveView, register_page
from ui.model import Model, RunInfo

register_page(__name__, path="/agents", name="Agent runs", order=2, title="titan · agent runs")

GROUPS_SHOWN = 50  # newest groups shown (of the runs the model keeps)


def stage(r: RunInfo, index: int, now: float) -> dcc.Link:
    return dcc.Link(html.Div([
        html.Div([html.Span(f"{index}", className="stage-n"), html.Span(r.name, className="stage-name")],
                 className="stage-head"),
        html.Div([w.badge(r.state), html.Span(w.run_duration(r.created_at, r.finished_at, now), className="muted")],
                 className="stage-foot"),
        *gate_mark(r),
    ], className="stage", style={"borderTopColor": w.color(r.state)}, **w.data(run=r.run_id)),
        href=f"/runs/{r.run_id}", title=r.run_id, className="stage-link")


def gate_mark(r: RunInfo) -> list[Any]:
    """A stage with gates waiting for a decision says so (and links to the Gates page)."""
    waiting = r.counts.get("AWAITING_APPROVAL", 0)
    if not waiting:
        return []
    return [html.Div(f"⏸ {waiting} gate{'s' if waiting != 1 else ''} waiting", className="stage-gate",
                     style={"color": w.color("AWAITING_APPROVAL")}, **w.data(gates_pending=waiting))]


def group(agent_run_id: str, runs: list[RunInfo], now: float) -> html.Div:
    items: list[Any] = []
    for i, r in enumerate(runs, 1):
        if i > 1:
            items.append(html.Span("→", className="arrow"))
        items.append(stage(r, i, now))
    first, last = runs[0], runs[-1]
    span = w.run_duration(first.created_at, last.finished_at if last.finished_at else None, now)
    return html.Div([
        html.Div([
            dcc.Link(agent_run_id, href=f"/runs?agent={agent_run_id}", className="mono agent-id"),
            html.Span(f"{len(runs)} stage{'s' if len(runs) != 1 else ''} · started {w.clock(first.created_at)} · "
                      f"{span}", className="muted"),
        ], className="group-head"),
        html.Div(items, className="stages"),
    ], className="card group", **w.data(agent=agent_run_id))


def render(model: Model, _params: dict[str, Any]) -> list[Any]:
    groups = model.agent_groups(GROUPS_SHOWN)
    if not groups:
        return [w.empty("no agent runs yet: runs submitted with an agent_run_id are grouped here")]
    now = time.time()
    return [html.Div([group(a, rs, now) for a, rs in groups], id="agent-groups")]


def key(model: Model, _params: dict[str, Any]) -> list[Any]:
    return [model.version("runs"), int(time.time()) // 2 if model.active_runs() else 0]


view = LiveView("agents", key=key, render=render)


def layout(**_query: Any) -> html.Div:
    return html.Div([html.H1("Agent runs"), view.layout()])
