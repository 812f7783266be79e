"""Run (``/runs/<run_id>``): the run's state and a live table of its jobs.

A first version: the live DAG, the job panel with logs and the timeline replace the table later.
The page *watches* its run (:meth:`ui.model.Model.watch`), so the model keeps every job of it, fed
by job events; the key below is the run's own version, so the page re-renders only when it changes.
"""

from __future__ import annotations

import time
from typing import Any

from dash import html

from ui import widgets as w
from ui.live import LiveView, register_page
from ui.model import Model

register_page(__name__, path_template="/runs/<run_id>", name="Run", nav=False, title="titan · run")

MOVING_TICK = 5  # seconds between re-renders of a running run with no change (its duration moves)
ROWS_SHOWN = 1000  # job rows rendered at most (the DAG view will summarise large runs)


def job_row(job_id: str, j: dict[str, Any]) -> html.Tr:
    started, finished = j.get("started_at"), j.get("finished_at")
    secs = w.duration(finished - started) if started and finished else ""
    return html.Tr([
        html.Td(job_id, className="mono"),
        html.Td(w.badge(j.get("state"))),
        html.Td(j.get("attempts", ""), className="num"),
        html.Td(j.get("worker") or "", className="mono"),
        html.Td("" if j.get("exit_code") is None else j["exit_code"], className="num"),
        html.Td(w.clock(started) if started else ""),
        html.Td(secs, className="num"),
        html.Td(", ".join(j.get("depends_on") or []), className="mono muted"),
    ], **w.data(job=job_id, state=j.get("state"), exit=j.get("exit_code")))


def render(model: Model, params: dict[str, Any]) -> list[Any]:
    run_id = params.get("run_id", "")
    run = model.run(run_id)
    jobs = model.jobs(run_id)
    if run is None:
        return [w.empty(f"run {run_id}: asking the broker…" if model.conn.up else f"run {run_id}: unknown")]
    head = html.Div([
        html.Div([html.H1(run.name), w.badge(run.state)], className="run-title"),
        html.Div([
            html.Span(run.run_id, className="mono", id="run-id"),
            html.Span(f"agent run {run.agent_run_id}" if run.agent_run_id else ""),
            html.Span(f"started {w.clock(run.created_at)}"),
            html.Span(f"duration {w.run_duration(run.created_at, run.finished_at)}"),
        ], className="run-meta muted"),
        w.progress(run.counts, run.jobs),
    ], className="section")
    if jobs is None:
        return [head, w.empty("loading jobs…")]
    cols = ("Job", "State", "Att.", "Worker", "Exit", "Started", "Duration", "Depends on")
    numeric = {"Att.", "Exit", "Duration"}
    rows = [job_row(job_id, j) for job_id, j in list(jobs.items())[:ROWS_SHOWN]]
    more = [w.empty(f"… {len(jobs) - ROWS_SHOWN} more jobs")] if len(jobs) > ROWS_SHOWN else []
    return [head, html.Table([html.Thead(html.Tr([html.Th(c, className="num" if c in numeric else "") for c in cols])), html.Tbody(rows)],
                             className="table", id="jobs-table"), *more]


def key(model: Model, params: dict[str, Any]) -> list[Any]:
    run_id = params.get("run_id", "")
    model.watch(run_id)  # each tick says the page is still open
    run = model.run(run_id)
    moving = int(time.time()) // MOVING_TICK if run is not None and run.finished_at is None else 0
    return [model.run_version(run_id), model.loaded(run_id), moving]


view = LiveView("run", key=key, render=render)


def layout(run_id: str = "", **_query: Any) -> html.Div:
    return view.layout({"run_id": run_id})
