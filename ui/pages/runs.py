"""Runs (``/runs``): newest first, filtered by state, name and agent run id, a page at a time.

The list comes from the UI's model (the newest ``RUNS_KEPT`` runs, kept current by events), and is
filtered and paged in the UI process. TODO(list-runs-cursor): when LIST_RUNS takes a ``before``
cursor, page past the kept runs by asking the broker for the next page instead.
"""

from __future__ import annotations

import time
from typing import Any

from dash import Input, Output, State, callback, ctx, dcc, html

from titan_zmq.states import RunState
from ui import data
from ui import widgets as w
from ui.live import LiveView, register_page
from ui.model import Model, RunInfo

register_page(__name__, path="/runs", name="Runs", order=1, title="titan · runs")

PAGE_SIZE = 50
ACTIVE_TICK = 2  # seconds between re-renders while a run is active (its duration moves)
FILTERS = [Input("runs-state", "value"), Input("runs-name", "value"), Input("runs-agent", "value")]


def row(r: RunInfo, now: float) -> html.Tr:
    return html.Tr([
        html.Td(r.name, className="run-name"),
        html.Td(w.run_link(r.run_id)),
        html.Td(w.badge(r.state)),
        html.Td(w.progress(r.counts, r.jobs)),
        html.Td(dcc.Link(r.agent_run_id, href=f"/runs?agent={r.agent_run_id}", className="mono")
                if r.agent_run_id else "", className="agent"),
        html.Td(w.clock(r.created_at)),
        html.Td(w.run_duration(r.created_at, r.finished_at, now), className="num"),
    ], **w.data(run=r.run_id))


def clamp(page: int | None, total: int) -> int:
    last = max(0, (total - 1) // PAGE_SIZE)
    return min(max(page or 0, 0), last)


def render(model: Model, _params: dict[str, Any], state: str | None, name: str | None, agent: str | None,
           page: int | None) -> list[Any]:
    total = model.list_runs(state, name or "", agent or "", 0, 0)[1]
    page = clamp(page, total)
    rows, _ = model.list_runs(state, name or "", agent or "", page * PAGE_SIZE, PAGE_SIZE)
    now = time.time()
    head = html.Tr([html.Th(h, className="num" if h == "Duration" else "")
                    for h in ("Name", "Run id", "State", "Progress", "Agent run", "Started", "Duration")])
    if not rows:
        return [w.empty("no runs match" if total == 0 and (state or name or agent) else "no runs yet")]
    pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
    return [
        html.Table([html.Thead(head), html.Tbody([row(r, now) for r in rows])], className="table", id="runs-table"),
        html.Div(f"{total} runs · page {page + 1} of {pages}", className="muted pager-info", id="runs-count"),
    ]


def key(model: Model, _params: dict[str, Any], *values: Any) -> list[Any]:
    moving = int(time.time()) // ACTIVE_TICK if model.active_runs() else 0
    return [model.version("runs"), moving, *values]


view = LiveView("runs", key=key, render=render, inputs=[*FILTERS, Input("runs-page", "data")])


def layout(state: str | None = None, name: str | None = None, agent: str | None = None, **_query: Any) -> html.Div:
    states = [{"label": "any state", "value": ""}] + [{"label": s.value, "value": s.value} for s in RunState]
    return html.Div([
        html.H1("Runs"),
        html.Div([
            dcc.Dropdown(id="runs-state", options=states, value=state or "", clearable=False, searchable=False,
                         className="filter-state"),
            dcc.Input(id="runs-name", value=name or "", placeholder="name contains…", debounce=0.3, type="text",
                      className="filter"),
            dcc.Input(id="runs-agent", value=agent or "", placeholder="agent run id…", debounce=0.3, type="text",
                      className="filter"),
            html.Div([html.Button("‹ newer", id="runs-prev", className="btn"),
                      html.Button("older ›", id="runs-next", className="btn")], className="pager"),
        ], className="filters"),
        dcc.Store(id="runs-page", data=0),
        view.layout({}, state or "", name or "", agent or "", 0),
    ])


@callback(Output("runs-page", "data"), Input("runs-prev", "n_clicks"), Input("runs-next", "n_clicks"), *FILTERS,
          State("runs-page", "data"), prevent_initial_call=True)
def _page(_prev: int | None, _next: int | None, state: str | None, name: str | None, agent: str | None,
          page: int | None) -> int:
    if ctx.triggered_id not in ("runs-prev", "runs-next"):
        return 0  # a filter changed: back to the newest
    total = data.model().list_runs(state, name or "", agent or "", 0, 0)[1]
    return clamp((page or 0) + (1 if ctx.triggered_id == "runs-next" else -1), total)
