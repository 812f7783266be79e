"""Cluster (``/``): a card per worker, the broker's figures and a chart of queued/running jobs."""

from __future__ import annotations

import time
from typing import Any

import plotly.graph_objects as go
from dash import ALL, Input, Output, State, callback, ctx, dcc, html, no_update

from titan_zmq.errors import TitanError
from ui import data, servicefeed
from ui import widgets as w
from ui.live import LiveView, register_page
from ui.model import Model

register_page(__name__, path="/", name="Cluster", order=0, title="titan · cluster")

MB = 1024 * 1024


def service_list(services: list[dict[str, Any]]) -> html.Ul:
    """The services a worker runs: name, state, and a link to the Services page (and the address)."""
    return html.Ul([html.Li([
        dcc.Link(s["job_id"], href=f"/services#svc-{s['id']}", className="mono svc-name"), w.badge(s["state"]),
        html.Span(s.get("address") or "", className="mono muted"),
    ], className="svc", **w.data(service=s["id"], state=s["state"])) for s in services], className="svc-list")


def worker_card(worker: dict[str, Any], now: float, services: list[dict[str, Any]] | None = None) -> html.Div:
    running: list[list[str]] = worker.get("running") or []
    slots = int(worker.get("slots") or 0)
    last_seen, registered = worker.get("last_seen"), worker.get("registered_at")
    jobs = [html.Li([html.Span(job_id, className="mono job-id"), w.run_link(run_id, run_id)],
                    title=f"{job_id} in run {run_id}", **w.data(run=run_id, job=job_id))
            for run_id, job_id in running]
    kind = worker.get("kind") or ("permanent" if worker.get("permanent") else "ephemeral")
    return html.Div([
        html.Div([html.Span(worker["id"], className="worker-id"),
                  html.Span(f"{worker.get('host', '?')} · pid {worker.get('pid', '?')}", className="muted")],
                 className="card-head"),
        html.Div([html.Span(kind, className="kind", **w.data(kind=kind)),
                  *([html.Span("draining", className="kind draining")] if worker.get("draining") else []),
                  html.Button("Drain", id={"type": "worker-drain", "worker": worker["id"]}, className="btn btn-sm",
                              n_clicks=0),
                  html.Button("Stop", id={"type": "worker-stop", "worker": worker["id"]}, className="btn btn-sm",
                              n_clicks=0)], className="worker-actions"),
        html.Div([html.Span(tag, className="tag") for tag in worker.get("capabilities") or []], className="tags"),
        w.slots_bar(len(running), slots),
        html.Ul(jobs, className="job-list") if jobs else html.Div("idle", className="muted idle"),
        *([service_list(services)] if services else []),
        html.Div([
            html.Span(f"heartbeat {w.duration(max(0.0, now - last_seen)) if last_seen else '—'} ago"),
            html.Span(f"up {w.duration(now - registered) if registered else '—'}"),
        ], className="card-foot muted"),
    ], className="card worker", id=f"worker-{worker['id']}", **w.data(worker=worker["id"]))


def figures(stats: dict[str, Any]) -> html.Div:
    if not stats:
        return w.empty("no figures from the broker yet")
    rss = stats.get("rss_bytes")
    return html.Div([
        w.figure_card("workers", stats.get("workers", 0)),
        w.figure_card("queued", stats.get("queued", 0), queued_note(stats.get("queued_by_capability") or {})),
        w.figure_card("running", stats.get("running", 0), "jobs"),
        w.figure_card("runs active", stats.get("runs_running", 0), f"of {stats.get('runs', 0)} known"),
        w.figure_card("store", "ok" if stats.get("store_ok", True) else "DOWN", "journal writes",
                      ok=bool(stats.get("store_ok", True))),
        w.figure_card("broker RSS", f"{rss / MB:.0f} MB" if rss else "—", f"up {w.duration(stats.get('uptime'))}"),
    ], className="figures", id="broker-figures")


def queued_note(by_cap: dict[str, int]) -> str:
    """Queued jobs per capability, the biggest first (a job nobody can run shows here)."""
    if not by_cap:
        return "jobs ready, waiting for a slot"
    return " · ".join(f"{cap} {n}" for cap, n in sorted(by_cap.items(), key=lambda kv: (-kv[1], kv[0])))


def chart(model: Model) -> dcc.Graph:
    with model.lock:
        hist = list(model.history)
    xs = [time.strftime("%H:%M:%S", time.localtime(t)) for t, _, _ in hist]
    fig = go.Figure([
        go.Scatter(x=xs, y=[q for _, q, _ in hist], name="queued", mode="lines", line={"color": w.color("QUEUED")}),
        go.Scatter(x=xs, y=[r for _, _, r in hist], name="running", mode="lines",
                   line={"color": w.color("RUNNING")}),
    ])
    fig.update_layout(height=180, margin={"l": 40, "r": 10, "t": 10, "b": 30}, legend={"orientation": "h", "y": 1.15},
                      plot_bgcolor="#fff", paper_bgcolor="#fff", xaxis={"nticks": 6, "showgrid": False},
                      yaxis={"rangemode": "tozero", "gridcolor": "#eef0f3"}, uirevision="keep")
    return dcc.Graph(figure=fig, id="queue-chart", config={"displayModeBar": False}, className="chart")


def render(model: Model, _params: dict[str, Any]) -> list[Any]:
    now = time.time()
    with model.lock:
        workers, stats = list(model.workers), dict(model.stats)
    svcs = servicefeed.by_worker()
    cards = [worker_card(wk, now, svcs.get(wk["id"])) for wk in workers] or [w.empty("no workers registered")]
    return [
        html.Section([html.H2("Broker"), figures(stats), chart(model)], className="section"),
        html.Section([html.H2(f"Workers ({len(workers)})"), html.Div(cards, className="cards", id="workers")],
                     className="section"),
        autoscale_section(stats),
    ]


def autoscale_section(stats: dict[str, Any]) -> html.Section:
    """The autoscaler's latest decisions with their reasons (when one reports to this broker)."""
    decisions = list((stats.get("autoscale") or {}).get("decisions") or [])[-10:]
    rows = [html.Li(f"{w.clock(d.get('at'))} {d.get('pool')} {d.get('action')} {d.get('worker') or ''}: "
                    f"{d.get('reason')}", **w.data(action=d.get("action"))) for d in reversed(decisions)]
    return html.Section([html.H2("Autoscaler"), html.Ul(rows, id="autoscale-decisions") if rows
                         else w.empty("no autoscaler decisions (titan autoscale / titan up --autoscale)")],
                        className="section")


def launch_form() -> html.Div:
    """Launch a worker on the broker's host: capabilities (comma-separated) and slots."""
    return html.Div([
        dcc.Input(id="launch-caps", placeholder="capabilities (GENERAL)", className="input", debounce=False),
        dcc.Input(id="launch-slots", type="number", min=1, value=4, className="input input-sm"),
        html.Button("Launch worker", id="launch-worker", className="btn", n_clicks=0),
        html.Span(id="cluster-action", className="muted"),
    ], className="toolbar", id="launch-form")


@callback(Output("cluster-action", "children"), Input("launch-worker", "n_clicks"),
          Input({"type": "worker-drain", "worker": ALL}, "n_clicks"),
          Input({"type": "worker-stop", "worker": ALL}, "n_clicks"),
          State("launch-caps", "value"), State("launch-slots", "value"), prevent_initial_call=True)
def act(_launch: int, _drains: list[int], _stops: list[int], caps: str | None, slots: int | None) -> Any:
    """The Launch / Drain / Stop buttons, through the UI's one broker link."""
    trigger = ctx.triggered_id
    if not trigger or not any(t.get("value") for t in ctx.triggered):
        return no_update  # a card re-rendered, nobody clicked
    try:
        if trigger == "launch-worker":
            tags = [t.strip() for t in (caps or "").split(",") if t.strip()]
            out = data.current().call(lambda c: c.launch_worker(tags, slots=int(slots or 4)))
            return f"launched {out['worker']}"
        name = str(trigger["worker"])
        if trigger["type"] == "worker-drain":
            data.current().call(lambda c: c.drain_worker(name))
            return f"{name} draining"
        data.current().call(lambda c: c.stop_worker(name))
        return f"{name} stopping after its jobs"
    except TitanError as exc:
        return f"error: {exc}"


view = LiveView("cluster", key=lambda m, _p: [m.version("workers"), m.version("stats"), servicefeed.key()],
                render=render)


def layout(**_query: Any) -> html.Div:
    return html.Div([launch_form(), view.layout()])
