"""Run (``/runs/<run_id>``): the live DAG, a job's side panel with its live log, the timeline, and actions.

- **Header** (a :class:`~ui.live.LiveView` keyed by the run's version): name, state, times, progress,
  the legend with the count of jobs per state; buttons cancel run and re-submit (a new run of the same
  specs, whose page opens).
- **Graph** (dash-cytoscape, preset positions from :mod:`ui.rungraph`: zoom, pan, click): the page
  *watches* its run, so the model keeps each job with a version; each tick the browser sends back the
  (shape, version) it shows, and gets ``no_update``, a ``Patch`` of the nodes that changed (O(changes)),
  or, when the set of jobs changed, the whole graph. Big runs open grouped by layer and state.
  ``#dag-jobs`` holds one hidden ``<span data-job data-state>`` per job, patched the same way, so tests
  and scripts read states without pixels.
- **Side panel** (a job clicked): state, attempts, command and args, requirement, priority; its live log
  (:mod:`ui.logtail`), stdout and stderr told apart, autoscroll that stops when the user scrolls up,
  the full log as a download; cancel job.
- **Timeline**: every attempt as a bar in a lane per worker slot (:mod:`ui.timeline`).
"""

from __future__ import annotations

import shlex
import time
from collections import OrderedDict
from typing import Any

import dash_cytoscape as cyto
from dash import Input, Output, Patch, State, callback, clientside_callback, ctx, dcc, html, no_update

from titan_zmq.errors import TitanError
from ui import data, logtail, rungraph, timeline
from ui import widgets as w
from ui.live import LiveView, register_page
from ui.model import Model

register_page(__name__, path_template="/runs/<run_id>", name="Run", nav=False, title="titan · run")

MOVING_TICK = 5  # seconds between re-renders of a running run's header with no change (its duration moves)
GRAPH_MS = 500  # how often the graph and the panel ask whether they changed
TIMELINE_MS = 2000  # how often an open timeline is redrawn while the run changes
LAYOUTS_KEPT = 16  # layouts cached (per run and shape)
SPECS_KEPT = 256  # job specs cached for the panel
MODES = [{"label": "auto", "value": "auto"}, {"label": "grouped", "value": "grouped"},
         {"label": "every job", "value": "detail"}]

_layouts: OrderedDict[tuple[str, int], tuple[rungraph.Layout, dict[str, int]]] = OrderedDict()
_specs: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()


# ---- header -----------------------------------------------------------------------------------


def render_head(model: Model, params: dict[str, Any]) -> list[Any]:
    run_id = params.get("run_id", "")
    run = model.run(run_id)
    if run is None:
        return [w.empty(f"run {run_id}: asking the broker…" if model.conn.up else f"run {run_id}: unknown")]
    return [
        html.Div([html.H1(run.name), w.badge(run.state)], className="run-title"),
        html.Div([
            html.Span(run.run_id, className="mono", id="run-id"),
            html.Span(f"agent run {run.agent_run_id}" if run.agent_run_id else ""),
            html.Span(f"started {w.clock(run.created_at)}"),
            html.Span(f"duration {w.run_duration(run.created_at, run.finished_at)}"),
        ], className="run-meta muted"),
        gate_banner(model, run_id, run.counts.get("AWAITING_APPROVAL", 0)),
        w.progress(run.counts, run.jobs),
        w.legend(counts=run.counts),
    ]


def gate_banner(model: Model, run_id: str, waiting: int) -> html.Div | None:
    """Approval gates of this run waiting for a decision, with a link to where they are decided."""
    if not waiting:
        return None
    jobs = model.jobs(run_id) or {}
    ids = sorted(j for j, job in jobs.items() if job.get("state") == "AWAITING_APPROVAL")
    return html.Div([
        html.Strong(f"{waiting} approval gate{'s' if waiting > 1 else ''} waiting"),
        html.Span(f": {', '.join(ids)}" if ids else ""),
        " — ", dcc.Link("decide on the Gates page", href=f"/gates?run={run_id}"),
    ], className="banner gate-banner", id="gate-banner")


def head_key(model: Model, params: dict[str, Any]) -> list[Any]:
    run_id = params.get("run_id", "")
    model.watch(run_id)  # each tick says the page is still open
    run = model.run(run_id)
    moving = int(time.time()) // MOVING_TICK if run is not None and run.finished_at is None else 0
    return [model.run_version(run_id), model.loaded(run_id), moving]


head = LiveView("run", key=head_key, render=render_head, interval_ms=GRAPH_MS)


def layout(run_id: str = "", **_query: Any) -> html.Div:
    data.model().watch(run_id)
    return html.Div([
        dcc.Location(id="run-goto", refresh="callback-nav"),
        dcc.Store(id="run-params", data={"run_id": run_id}),
        html.Div([
            head.layout({"run_id": run_id}),
            html.Div([
                dcc.ConfirmDialogProvider(html.Button("Cancel run", className="btn btn-danger"), id="run-cancel",
                                          message=f"Cancel every unfinished job of run {run_id}?"),
                html.Button("Re-submit", id="run-resubmit", className="btn",
                            title="Submit the same jobs again as a new run, and open it"),
                html.Span(id="run-msg", className="run-msg", role="status"),
            ], className="run-actions"),
        ], className="section run-head"),
        dcc.Tabs(id="run-tab", value="graph", className="tabs", children=[
            dcc.Tab(label="Graph", value="graph", className="tab", selected_className="tab-on"),
            dcc.Tab(label="Timeline", value="timeline", className="tab", selected_className="tab-on"),
        ]),
        html.Div([graph_pane(run_id), panel()], id="graph-pane", className="run-body"),
        html.Div(id="timeline-pane", className="timeline-pane", style={"display": "none"}),  # plotly loads when shown
        dcc.Interval(id="dag-tick", interval=GRAPH_MS),
        dcc.Interval(id="timeline-tick", interval=TIMELINE_MS, disabled=True),
        dcc.Store(id="dag-expanded", data=[]), dcc.Store(id="run-job"),
        dcc.Store(id="panel-seen"), dcc.Store(id="log-seen"), dcc.Store(id="log-scroll"),
        dcc.Store(id="timeline-seen"), dcc.Store(id="dag-fit"),
    ])


# ---- graph ------------------------------------------------------------------------------------


def graph_pane(run_id: str) -> html.Div:
    """The graph, drawn now when the run's jobs are at hand (no round trip before the first picture)."""
    m = data.model()
    shape, version = m.graph_version(run_id)
    elements: Any = []
    fit: Any = {"name": "preset", "fit": True, "padding": 30}
    spans: Any = []
    summary: Any = ""
    seen = None
    if shape >= 0:
        elements, fit, spans, summary = full_graph(m, run_id, shape, "auto", [])
        seen = {"shape": shape, "version": version, "mode": "auto", "expanded": []}
    return html.Div([
        dcc.Store(id="dag-seen", data=seen),
        html.Div([
            html.Span("View", className="muted"),
            dcc.RadioItems(id="dag-mode", options=MODES, value="auto", inline=True, className="radio"),
            html.Span(summary, id="dag-summary", className="muted dag-summary"),
            dcc.Input(id="job-find", type="text", placeholder="open a job by id…", debounce=True,
                      className="filter job-find"),
        ], className="dag-controls"),
        cyto.Cytoscape(
            id="dag", elements=elements, layout=fit,
            stylesheet=rungraph.stylesheet(w.JOB_COLORS, w.UNKNOWN_COLOR), minZoom=0.05, maxZoom=1.4,
            autoRefreshLayout=False, autoungrabify=True, boxSelectionEnabled=False, responsive=True,
            className="dag", style={"width": "100%", "height": "560px"}),
        html.Div(spans, id="dag-jobs", hidden=True),
    ], className="dag-pane")


def cached_layout(run_id: str, shape: int, jobs: rungraph.Jobs) -> tuple[rungraph.Layout, dict[str, int]]:
    key = (run_id, shape)
    if key not in _layouts:
        lay = rungraph.layout(jobs)
        _layouts[key] = (lay, lay.index)
        while len(_layouts) > LAYOUTS_KEPT:
            _layouts.popitem(last=False)
    _layouts.move_to_end(key)
    return _layouts[key]


def job_span(job_id: str, state: Any) -> html.Span:
    return html.Span(**w.data(job=job_id, state=state))


def grouped(mode: str | None, jobs: int) -> bool:
    return mode == "grouped" or (mode != "detail" and jobs > rungraph.DETAIL_LIMIT)


def summary_text(lay: rungraph.Layout, is_grouped: bool) -> str:
    n = len(lay.order)
    text = f"{n:,} job{'s' if n != 1 else ''} in {len(lay.by_layer)} layer{'s' if len(lay.by_layer) != 1 else ''}"
    if is_grouped:
        text += " · grouped by layer and state: click a group to expand its layer"
    return text + " · scroll to zoom, drag to pan"


@callback(
    Output("dag", "elements"), Output("dag", "layout"), Output("dag-jobs", "children"), Output("dag-summary", "children"),
    Output("dag-seen", "data"),
    Input("dag-tick", "n_intervals"), Input("dag-mode", "value"), Input("dag-expanded", "data"),
    State("dag-seen", "data"), State("run-params", "data"),
)
def update_graph(_tick: int | None, mode: str | None, expanded: list[int] | None, seen: dict[str, Any] | None,
                 params: dict[str, Any] | None) -> tuple[Any, ...]:
    run_id = (params or {}).get("run_id", "")
    m = data.model()
    shape, version = m.graph_version(run_id)
    if shape < 0:
        return (no_update,) * 5
    key = {"shape": shape, "version": version, "mode": mode, "expanded": sorted(expanded or [])}
    if seen == key:
        return (no_update,) * 5
    if seen is not None and all(seen.get(k) == key[k] for k in ("shape", "mode", "expanded")):
        patched = patch_graph(m, run_id, shape, seen["version"], mode, expanded or [])
        if patched is not None:
            return (*patched, key)
    return (*full_graph(m, run_id, shape, mode, expanded or []), key)


def full_graph(m: Model, run_id: str, shape: int, mode: str | None, expanded: list[int]) -> tuple[Any, ...]:
    """Elements, layout (a fit), the hidden spans and the summary line of the whole graph."""
    jobs = m.jobs(run_id) or {}
    lay, _ = cached_layout(run_id, shape, jobs)
    is_grouped = grouped(mode, len(lay.order))
    elements = (rungraph.grouped_elements(jobs, lay, expanded) if is_grouped
                else rungraph.detail_elements(jobs, lay))
    fit = {"name": "preset", "fit": True, "padding": 30, "animate": False, "key": f"{shape}/{mode}/{expanded}"}
    spans = [job_span(j, jobs[j].get("state")) for j in lay.order]
    return elements, fit, spans, summary_text(lay, is_grouped)


def patch_graph(m: Model, run_id: str, shape: int, since: int, mode: str | None,
                expanded: list[int]) -> tuple[Any, ...] | None:
    """The changes since ``since``: the hidden spans and (every-job view) the nodes as patches, O(changes);
    the grouped view's few elements whole. None when the layout is not at hand (redraw everything)."""
    if (run_id, shape) not in _layouts:
        return None
    lay, index = cached_layout(run_id, shape, {})
    changes = m.job_changes(run_id, since)
    spans, nodes = Patch(), Patch()
    for job_id, job in changes.items():
        i = index.get(job_id)
        if i is None:
            return None
        spans[i] = job_span(job_id, job.get("state"))
        nodes[i]["data"]["state"] = str(job.get("state"))
    if grouped(mode, len(lay.order)):  # groups move with states: recomputed (a small list)
        return rungraph.grouped_elements(m.jobs(run_id) or {}, lay, expanded), no_update, spans, no_update
    return nodes, no_update, spans, no_update


@callback(
    Output("run-job", "data"), Output("dag-expanded", "data"),
    Input("dag", "tapNodeData"), Input("job-find", "value"), Input("panel-close", "n_clicks"),
    State("dag-expanded", "data"),
    prevent_initial_call=True,
)
def on_tap(node: dict[str, Any] | None, find: str | None, _close: int | None, expanded: list[int] | None) -> tuple[Any, ...]:
    if ctx.triggered_id == "panel-close":
        return None, no_update
    if ctx.triggered_id == "job-find":
        return (find.strip() or None) if find else None, no_update
    if not node:
        return no_update, no_update
    if node.get("kind") == "group":
        layer = int(node.get("layer", -1))
        opened = set(expanded or [])
        return no_update, sorted(opened ^ {layer})
    return node.get("id"), no_update


# ---- side panel -------------------------------------------------------------------------------


def panel() -> html.Aside:
    return html.Aside([
        html.Div([
            html.Span(id="panel-title", className="panel-title mono"),
            html.Button("×", id="panel-close", className="btn-close", title="Close"),
        ], className="panel-head"),
        html.Div(id="panel-body"),
        html.Div([
            dcc.ConfirmDialogProvider(html.Button("Cancel job", className="btn btn-danger"), id="job-cancel",
                                      message="Cancel this job and every job after it?"),
            html.A("Download full log", id="log-download", className="btn", href="", download=""),
        ], className="panel-actions"),
        html.Div([html.Span("Log", className="log-title"),
                  html.Span([html.Span("stdout", className="ln-key out"), html.Span("stderr", className="ln-key err")]),
                  html.Span(id="log-info", className="muted")], className="log-head"),
        html.Pre(id="log-lines", className="log-box"),
    ], id="job-panel", className="panel hidden")


def job_spec(run_id: str, job_id: str) -> dict[str, Any] | None:
    """The job's spec (once per job: it never changes), or None when the broker does not answer."""
    key = (run_id, job_id)
    if key not in _specs:
        try:
            st = data.current().call(lambda c: c.status(run_id, specs=True, job_id=job_id), timeout=5)
        except (TitanError, TimeoutError):
            return None
        _specs[key] = dict(st["jobs"][job_id].get("spec") or {})
        while len(_specs) > SPECS_KEPT:
            _specs.popitem(last=False)
    return _specs[key]


def command_text(spec: dict[str, Any]) -> str:
    args = [str(a) for a in spec.get("args") or []]
    if spec.get("command"):
        return shlex.join([*map(str, spec["command"]), *args])
    if spec.get("file"):
        return shlex.join([str(spec["file"]), *args])
    return "—"


def attempts_table(job: dict[str, Any]) -> html.Table | html.Div:
    rows = []
    for a in job.get("attempts_log") or []:
        start, end = a.get("started_at") or a.get("dispatched_at"), a.get("finished_at")
        rows.append(html.Tr([
            html.Td(a.get("attempt"), className="num"), html.Td(a.get("worker") or "", className="mono"),
            html.Td(w.clock(start) if start else ""), html.Td(w.clock(end) if end else ""),
            html.Td(w.duration((end or time.time()) - start) if start else "", className="num"),
            html.Td("" if a.get("exit_code") is None else a["exit_code"], className="num"),
            html.Td([w.badge(a.get("outcome")), html.Span(f" {a['error']}", className="muted") if a.get("error") else ""]),
        ], **w.data(attempt=a.get("attempt"), outcome=a.get("outcome"))))
    if not rows:
        return html.Div("no attempt yet", className="muted")
    cols = ("#", "Worker", "Start", "End", "Took", "Exit", "Outcome")
    return html.Table([html.Thead(html.Tr([html.Th(c) for c in cols])), html.Tbody(rows)],
                      className="table attempts", id="attempts")


def render_panel(job_id: str, job: dict[str, Any], spec: dict[str, Any] | None) -> list[Any]:
    spec = spec or {}
    facts = [
        ("state", w.badge(job.get("state"))),
        ("command", html.Code(command_text(spec), className="mono cmd") if spec else "…"),
        ("requirement", job.get("requirement") or spec.get("requirement") or "GENERAL"),
        ("priority", str(job.get("priority", spec.get("priority", 0)))),
        ("depends on", ", ".join(job.get("depends_on") or []) or "—"),
        ("attempts", f"{job.get('attempts') or 0} (retries allowed: {spec.get('retries', '?')})"),
    ]
    if job.get("error"):
        facts.append(("error", html.Span(job["error"], className="bad")))
    return [
        html.Dl([part for k, v in facts for part in (html.Dt(k), html.Dd(v))], className="facts",
                **w.data(job=job_id, state=job.get("state"))),
        attempts_table(job),
    ]


def log_line(rec: list[Any]) -> html.Span:
    stream = "err" if rec[2] == "stderr" else "out"
    return html.Span(f"{rec[3]}\n", className=f"ln {stream}", **w.data(n=rec[0], attempt=rec[1]))


@callback(
    Output("job-panel", "className"), Output("panel-title", "children"), Output("panel-body", "children"),
    Output("panel-seen", "data"), Output("log-lines", "children"), Output("log-seen", "data"),
    Output("log-info", "children"), Output("log-download", "href"),
    Input("dag-tick", "n_intervals"), Input("run-job", "data"),
    State("panel-seen", "data"), State("log-seen", "data"), State("run-params", "data"),
)
def update_panel(_tick: int | None, job_id: str | None, seen: Any, log_seen: dict[str, Any] | None,
                 params: dict[str, Any] | None) -> tuple[Any, ...]:
    run_id = (params or {}).get("run_id", "")
    if not job_id:
        return ("panel hidden", no_update, no_update, None, no_update, None, no_update, no_update) if seen else (no_update,) * 8
    m = data.model()
    job = m.job(run_id, job_id)
    if job is None:
        return "panel", job_id, w.empty(f"no job {job_id!r} in this run"), [job_id, -1], [], None, "", ""
    spec = job_spec(run_id, job_id)
    key = [job_id, m.job_version(run_id, job_id), spec is not None]
    body = (no_update,) * 4 if key == seen else ("panel", job_id, render_panel(job_id, job, spec), key)
    try:
        tail = logtail.tails.get(run_id, job_id)
    except (TitanError, TimeoutError) as exc:
        return (*body, no_update, no_update, f"log unavailable: {exc}", no_update)
    logs = update_log(tail, job_id, log_seen)
    return (*body, *logs, logtail.download_href(run_id, job_id))


def update_log(tail: logtail.LogTail, job_id: str, seen: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    """The log pane: unchanged, new lines added (a Patch), or all of it (another job, or too long).

    New lines are *assigned* at their place (line number - the first shown), never appended: two
    polls in flight at once (a slow response) then write the same lines to the same places instead
    of showing them twice."""
    nxt = tail.next
    info = f"{nxt:,} lines" + (f" · the last {len(tail.lines):,} shown" if tail.lines and tail.lines[0][0] > 0 else "")
    if seen and seen.get("job") == job_id and seen.get("next") == nxt:
        return no_update, no_update, no_update
    if seen and seen.get("job") == job_id and nxt - int(seen.get("base", 0)) < logtail.PANEL_LINES * 1.5:
        base = int(seen["base"])
        fresh = tail.since(int(seen["next"]))
        if not fresh or fresh[0][0] == seen["next"]:
            lines = Patch()
            for rec in fresh:
                lines[rec[0] - base] = log_line(rec)
            return lines, {"job": job_id, "next": nxt, "base": base}, info
    kept = tail.since(0)
    base = kept[0][0] if kept else nxt
    return [log_line(r) for r in kept], {"job": job_id, "next": nxt, "base": base}, info


# autoscroll: follow the end of the log unless the user scrolled up (then leave the view where it is)
clientside_callback(
    """
    function(_lines) {
        const el = document.getElementById('log-lines');
        if (!el) { return window.dash_clientside.no_update; }
        if (!el._titanScroll) {
            el._titanScroll = true;
            el.dataset.stick = 'true';
            el.addEventListener('scroll', function () {
                el.dataset.stick = (el.scrollHeight - el.scrollTop - el.clientHeight < 40) ? 'true' : 'false';
            });
        }
        if (el.dataset.stick !== 'false') { el.scrollTop = el.scrollHeight; }
        return window.dash_clientside.no_update;
    }
    """,
    Output("log-scroll", "data"), Input("log-lines", "children"),
)


# the graph's box changes width as the panel opens or closes: resize the canvas (and re-fit a small graph)
clientside_callback(
    """
    function(_job) {
        setTimeout(function () {
            const cy = window.cy;
            if (!cy) { return; }
            cy.resize();
            if (cy.nodes().length <= 60) { cy.fit(undefined, 30); }
        }, 30);
        return window.dash_clientside.no_update;
    }
    """,
    Output("dag-fit", "data"), Input("job-panel", "className"),
)


# ---- actions ----------------------------------------------------------------------------------


@callback(
    Output("run-msg", "children"), Output("run-goto", "href"),
    Input("run-cancel", "submit_n_clicks"), Input("run-resubmit", "n_clicks"), Input("job-cancel", "submit_n_clicks"),
    State("run-job", "data"), State("run-params", "data"),
    prevent_initial_call=True,
)
def on_action(_cancel: int | None, _resubmit: int | None, _job_cancel: int | None, job_id: str | None,
              params: dict[str, Any] | None) -> tuple[Any, Any]:
    run_id = (params or {}).get("run_id", "")
    sync = data.current()
    try:
        if ctx.triggered_id == "run-cancel":
            out = sync.call(lambda c: c.cancel(run_id))
            return f"cancelled {len(out['cancelled'])} job(s); run {out['state']}", no_update
        if ctx.triggered_id == "job-cancel" and job_id:
            out = sync.call(lambda c: c.cancel(run_id, job_id))
            return f"cancelled {', '.join(out['cancelled']) or 'nothing (already finished)'}", no_update
        if ctx.triggered_id == "run-resubmit":
            new = sync.call(lambda c: c.resubmit(run_id).run_id)
            return f"submitted {new}", f"/runs/{new}"
    except (TitanError, TimeoutError) as exc:
        return f"error: {exc}", no_update
    return no_update, no_update


# ---- tabs and timeline ------------------------------------------------------------------------


@callback(
    Output("graph-pane", "style"), Output("timeline-pane", "style"), Output("timeline-tick", "disabled"),
    Input("run-tab", "value"),
)
def on_tab(tab: str | None) -> tuple[Any, Any, bool]:
    shown: dict[str, str] = {}
    hidden = {"display": "none"}
    return (hidden, shown, False) if tab == "timeline" else (shown, hidden, True)


@callback(
    Output("timeline-pane", "children"), Output("timeline-seen", "data"),
    Input("timeline-tick", "n_intervals"), Input("run-tab", "value"),
    State("timeline-seen", "data"), State("run-params", "data"),
)
def update_timeline(_tick: int | None, tab: str | None, seen: Any, params: dict[str, Any] | None) -> tuple[Any, Any]:
    if tab != "timeline":
        return no_update, no_update
    run_id = (params or {}).get("run_id", "")
    m = data.model()
    run = m.run(run_id)
    running = run is not None and run.finished_at is None
    key = [m.graph_version(run_id), int(time.time() * 1000 / TIMELINE_MS) if running else 0]
    if key == seen:
        return no_update, no_update
    bars = timeline.bars(m.jobs(run_id) or {}, time.time())
    if not bars:
        return w.empty("no attempt has reached a worker yet"), key
    return dcc.Graph(id="timeline", figure=timeline.figure(bars, w.color), config={"displaylogo": False}), key
