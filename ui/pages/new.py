"""Constructor (``/new``): build a DAG in a form generated from the job schema, see it as YAML and Python, deploy.

The draft lives in the browser (a session ``dcc.Store``) and, saved, in the cluster's store
(``ui/drafts/<name>``, :mod:`ui.constructor.remote`). One callback writes it (:func:`_edit`: add,
remove, select, type); :func:`_form` renders the selected job's form when the selection changes (never
while one types, which would move the cursor); :func:`_render` redraws what follows from the draft
(the graph, the job chips, the error next to each field, the code panes, Deploy's state). The pure
logic (form fields from the schema, checks, code) is in :mod:`ui.constructor`; the cluster is reached
only through ``data.current().call``, the UI's one client.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go
from dash import ALL, Input, Output, State, callback, ctx, dcc, html, no_update

from titan_zmq.errors import TitanError
from titan_zmq.jobspec import JobSpec
from ui import data
from ui import widgets as w
from ui.constructor import codegen, remote
from ui.constructor import draft as D
from ui.live import register_page

register_page(__name__, path="/new", name="New", order=3, title="titan · new pipeline")

SPEC: type[JobSpec] = JobSpec  # the schema the form follows (a test may point this at a subclass)
LIST_TIMEOUT = 3.0  # seconds the page waits for the list of drafts or scripts at load
DEPLOY_TIMEOUT = 60.0  # seconds for fetching scripts and submitting
MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # a script; data files belong in assets uploaded with `titan upload`
FIELD = "new-field"
TOP_LABELS = {"name": "Pipeline name", "agent_run_id": "Agent run id (optional)"}
TYPE_COLORS = {"run": "#2f6fd6", "service": "#0f8b8d"}


def _fid(name: Any, kind: str = FIELD, key: Any = None) -> dict[str, Any]:
    """A pattern-matching id; a job's inputs carry its node key, so an edit always lands on its own job."""
    return {"type": kind, "name": name} if key is None else {"type": kind, "name": name, "key": key}


def _safe_call(fn: Callable[[Any], Any], default: Any) -> Any:
    try:
        return data.current().call(fn, timeout=LIST_TIMEOUT)
    except Exception:  # the broker is down or slow: the page still opens, with empty lists
        return default


def layout(**_query: Any) -> html.Div:
    drafts = _safe_call(remote.list_drafts, [])
    scripts = _safe_call(remote.list_scripts, [])
    return html.Div([
        dcc.Store(id="new-draft", storage_type="session", data=D.new_draft()),
        dcc.Store(id="new-selected", storage_type="session", data=None),
        dcc.Store(id="new-form-v", data=0),
        dcc.Store(id="new-scripts", data=scripts),
        dcc.Location(id="new-go", refresh="callback-nav"),
        dcc.Download(id="new-download"),
        html.Div([
            html.H1("New pipeline"),
            html.Div([
                dcc.Dropdown(id="new-drafts", options=drafts, placeholder="saved drafts…", className="draft-pick"),
                html.Button("Load", id="new-load", className="btn"),
                html.Button("Save draft", id="new-save", className="btn"),
                html.Button("New", id="new-clear", className="btn", title="start an empty draft"),
                html.Button("Deploy ▶", id="new-deploy", className="btn btn-primary"),
            ], className="new-actions"),
        ], className="new-head"),
        html.Div(id="new-msg", className="new-msg", role="status"),
        html.Div(id="new-top", className="new-top"),
        html.Div([
            html.Div([
                html.Div([
                    html.H2("Graph"),
                    html.Div([html.Button("+ run job", id="new-add-run", className="btn"),
                              html.Button("+ service", id="new-add-service", className="btn")], className="new-adds"),
                ], className="pane-head"),
                html.Div(id="new-nodes", className="chips"),
                dcc.Graph(id="new-graph", config={"displayModeBar": False}, className="new-graph",
                          figure=figure(D.new_draft(), D.Report(), None)),
                html.Div(id="new-dag-err", className="field-error dag-error", role="alert"),
                html.Div(id="new-form", className="new-form"),
            ], className="new-left"),
            html.Div([
                html.Div([html.H2("YAML · titan run"),
                          html.Button("Download", id="new-get-yaml", className="btn btn-small")], className="pane-head"),
                html.Pre(id="new-yaml", className="code"),
                html.Div([html.H2("Python · TitanClient"),
                          html.Button("Download", id="new-get-python", className="btn btn-small")],
                         className="pane-head"),
                html.Pre(id="new-python", className="code"),
            ], className="new-right"),
        ], className="new-grid"),
    ], className="new-page")


# ---- rendering ------------------------------------------------------------------------------------------------


def figure(draft: dict[str, Any], report: D.Report, selected: str | None) -> go.Figure:
    """The DAG, layered left to right by depth; a job with a problem has a red ring; click selects."""
    depth = D.depths(draft)
    layers: dict[int, list[str]] = {}
    for n in draft["nodes"]:
        layers.setdefault(depth[n["key"]], []).append(n["key"])
    pos = {key: (d, (len(keys) - 1) / 2 - i) for d, keys in layers.items() for i, key in enumerate(keys)}
    fig = go.Figure()
    for n in draft["nodes"]:
        for p in n["values"].get("depends_on") or []:
            if p in pos:
                fig.add_annotation(x=pos[n["key"]][0], y=pos[n["key"]][1], ax=pos[p][0], ay=pos[p][1],
                                   xref="x", yref="y", axref="x", ayref="y", showarrow=True, arrowhead=2,
                                   arrowsize=1.2, arrowwidth=1.5, arrowcolor="#9aa3b2", standoff=16, startstandoff=16)
    nodes = draft["nodes"]
    bad = [n["key"] in report.fields or n["key"] in report.jobs for n in nodes]
    fig.add_trace(go.Scatter(
        x=[pos[n["key"]][0] for n in nodes], y=[pos[n["key"]][1] for n in nodes], mode="markers+text",
        text=[D.job_id(n) for n in nodes], textposition="bottom center", customdata=[n["key"] for n in nodes],
        hovertext=[f"{D.job_id(n)} ({n['values'].get('type') or 'run'})" for n in nodes], hoverinfo="text",
        marker={"size": [26 if n["key"] == selected else 20 for n in nodes],
                "color": [TYPE_COLORS.get(str(n["values"].get("type") or "run"), "#6b7280") for n in nodes],
                "symbol": ["diamond" if n["values"].get("type") == "service" else "circle" for n in nodes],
                "line": {"width": [3 if b else 1 for b in bad], "color": ["#c0392b" if b else "#fff" for b in bad]}},
    ))
    tallest = max((len(k) for k in layers.values()), default=1)
    fig.update_layout(height=max(220, 90 + 70 * tallest), margin={"l": 30, "r": 30, "t": 16, "b": 16},
                      showlegend=False, plot_bgcolor="#fff", paper_bgcolor="#fff", dragmode=False,
                      xaxis={"visible": False, "range": [-0.5, max(layers, default=0) + 0.5]},
                      yaxis={"visible": False, "range": [-tallest / 2 - 0.2, tallest / 2 + 0.2]})
    return fig


def chips(draft: dict[str, Any], report: D.Report, selected: str | None) -> list[Any]:
    if not draft["nodes"]:
        return [w.empty("No jobs yet: add one with “+ run job” or “+ service”.")]
    out = []
    for n in draft["nodes"]:
        cls = "chip" + (" selected" if n["key"] == selected else "")
        cls += " chip-bad" if n["key"] in report.fields or n["key"] in report.jobs else ""
        out.append(html.Button(D.job_id(n), id={"type": "new-node", "key": n["key"]}, className=cls,
                               **w.data(key=n["key"], job=D.job_id(n))))
    return out


def field_row(f: D.FormField, value: Any, error: str, draft: dict[str, Any], n: dict[str, Any],
              scripts: list[str]) -> html.Div:
    widget = WIDGETS[f.kind](f, value, draft, n, scripts)
    label = "parents (depends_on)" if f.kind == "parents" else f.name
    return html.Div([
        html.Label(label, className="field-label"),
        widget,
        html.Div(f.doc, className="field-doc"),
        html.Div(error, id=_fid(f.name, "new-err", n["key"]), className="field-error"),
    ], className=f"field field-{f.kind}", **w.data(field=f.name))


def _text(f: D.FormField, value: Any, _d: dict[str, Any], n: dict[str, Any], *_: Any) -> Any:
    return dcc.Input(id=_fid(f.name, FIELD, n["key"]), type="text", value=value or "", placeholder=f.placeholder, className="input",
                     spellCheck=False)


def _lines(f: D.FormField, value: Any, _d: dict[str, Any], n: dict[str, Any], *_: Any) -> Any:
    return dcc.Textarea(id=_fid(f.name, FIELD, n["key"]), value=value or "", placeholder=f.placeholder, className="input textarea",
                        spellCheck=False)


def _bool(f: D.FormField, value: Any, _d: dict[str, Any], n: dict[str, Any], *_: Any) -> Any:
    return dcc.Checklist(id=_fid(f.name, FIELD, n["key"]), options=[{"label": " yes", "value": "on"}],
                         value=["on"] if value else [], className="check")


def _choice(f: D.FormField, value: Any, _d: dict[str, Any], n: dict[str, Any], *_: Any) -> Any:
    return dcc.RadioItems(id=_fid(f.name, FIELD, n["key"]), options=list(f.choices), value=value or f.default, inline=True,
                          className="check")


def _parents(f: D.FormField, value: Any, draft: dict[str, Any], n: dict[str, Any], _s: list[str]) -> Any:
    others = [{"label": D.job_id(m), "value": m["key"]} for m in draft["nodes"] if m["key"] != n["key"]]
    if not others:
        return html.Div("no other jobs yet", className="muted")
    return dcc.Checklist(id=_fid(f.name, FIELD, n["key"]), options=others, value=value or [], inline=True, className="check")


def _script(f: D.FormField, value: Any, _d: dict[str, Any], n: dict[str, Any], scripts: list[str]) -> Any:
    options = sorted(set(scripts) | ({value} if value else set()))
    return html.Div([
        dcc.Dropdown(id=_fid(f.name, FIELD, n["key"]), options=options, value=value or None, placeholder="an uploaded file…",
                     className="script-pick"),
        dcc.Upload(id=_fid("file", "new-upload", n["key"]), children=html.Span(["or ", html.A("upload a script"), " from this computer"]),
                   max_size=MAX_UPLOAD_BYTES, className="upload"),
    ], className="script-row")


WIDGETS: dict[str, Callable[..., Any]] = {"text": _text, "number": _text, "lines": _lines, "map": _lines,
                                          "bool": _bool, "choice": _choice, "parents": _parents, "script": _script}


def job_form(draft: dict[str, Any], key: str | None, scripts: list[str], report: D.Report) -> list[Any]:
    n = D.node(draft, key)
    if n is None:
        return [w.empty("Select a job (click it in the graph or above) to edit its fields.")] if draft["nodes"] else []
    errors = report.fields.get(n["key"], {})
    rows = [field_row(f, n["values"].get(f.name), errors.get(f.name, ""), draft, n, scripts)
            for f in D.form_fields(SPEC)]
    return [
        html.Div([html.H2("Selected job"),
                  html.Button("Remove job", id={"type": "new-remove", "key": n["key"]}, className="btn btn-small btn-danger")],
                 className="pane-head"),
        html.Div(report.jobs.get(n["key"], ""), id=_fid("job", "new-job-err", n["key"]), className="field-error job-error"),
        html.Div(rows, className="fields", **w.data(key=n["key"])),
    ]


def top_form(draft: dict[str, Any], report: D.Report) -> list[Any]:
    return [html.Div([
        html.Label(label, className="field-label"),
        dcc.Input(id=_fid(top, "new-top"), type="text", value=draft.get(top) or "", className="input", spellCheck=False,
                  placeholder="e.g. nightly-etl" if top == "name" else "groups several runs"),
        html.Div(report.top.get(top, ""), id=_fid(top, "new-top-err"), className="field-error"),
    ], className="field", **w.data(field=top)) for top, label in TOP_LABELS.items()]


def _check(draft: dict[str, Any], scripts: list[str] | None) -> D.Report:
    return D.check(draft, SPEC, set(scripts) if scripts is not None else None)


# ---- callbacks -------------------------------------------------------------------------------------------------


@callback(Output("new-top", "children"), Output("new-form", "children"),
          Input("new-selected", "data"), Input("new-form-v", "data"),
          State("new-draft", "data"), State("new-scripts", "data"))
def _form(selected: str | None, _v: int, doc: Any, scripts: list[str] | None) -> tuple[Any, Any]:
    draft = D.clean(doc)
    report = _check(draft, scripts)
    return top_form(draft, report), job_form(draft, selected, scripts or [], report)


@callback(
    Output("new-yaml", "children"), Output("new-python", "children"), Output("new-graph", "figure"),
    Output("new-nodes", "children"), Output("new-dag-err", "children"),
    Output(_fid(ALL, "new-err", ALL), "children"), Output(_fid(ALL, "new-top-err"), "children"),
    Output(_fid(ALL, "new-job-err", ALL), "children"), Output("new-deploy", "disabled"),
    Input("new-draft", "data"), Input("new-selected", "data"), Input("new-scripts", "data"),
)
def _render(doc: Any, selected: str | None, scripts: list[str] | None) -> tuple[Any, ...]:
    draft = D.clean(doc)
    report = _check(draft, scripts)
    field_errors = [report.fields.get(o["id"]["key"], {}).get(o["id"]["name"], "") for o in ctx.outputs_list[5]]
    top_errors = [report.top.get(o["id"]["name"], "") for o in ctx.outputs_list[6]]
    job_errors = [report.jobs.get(o["id"]["key"], "") for o in ctx.outputs_list[7]]
    return (codegen.to_yaml(draft, report), codegen.to_python(draft, report, data.current().address),
            figure(draft, report, selected), chips(draft, report, selected),
            report.dag if report.dag and draft["nodes"] else "", field_errors, top_errors, job_errors, not report.ok)


Change = tuple[Any, Any, bool, Any]  # (draft or no_update, selected or no_update, re-render the form, message)


@callback(
    Output("new-draft", "data"), Output("new-selected", "data"), Output("new-form-v", "data"),
    Output("new-msg", "children", allow_duplicate=True),
    Input("new-add-run", "n_clicks"), Input("new-add-service", "n_clicks"), Input("new-clear", "n_clicks"),
    Input("new-load", "n_clicks"), Input({"type": "new-remove", "key": ALL}, "n_clicks"), Input({"type": "new-node", "key": ALL}, "n_clicks"),
    Input("new-graph", "clickData"), Input(_fid(ALL, FIELD, ALL), "value"), Input(_fid(ALL, "new-top"), "value"),
    State("new-draft", "data"), State("new-selected", "data"), State("new-form-v", "data"), State("new-drafts", "value"),
    prevent_initial_call=True,
)
def _edit(*args: Any) -> tuple[Any, ...]:
    *_inputs, doc, selected, version, pick = args
    trigger = ctx.triggered_id
    value = ctx.triggered[0]["value"] if ctx.triggered else None
    kind = trigger.get("type") if isinstance(trigger, dict) else trigger
    draft = D.clean(doc)
    # Every request carries every input of the form, so each answer holds all that was typed until then:
    # two quick edits in flight cannot undo each other, whatever order their answers come in.
    typed = _sync(draft, ctx.inputs_list[7], ctx.inputs_list[8])
    action = ACTIONS.get(str(kind))
    if action is None or value is None:  # typing (synced above), or a button (re)appearing: not a click
        return draft if typed else no_update, no_update, no_update, no_update
    new_draft, new_selected, rerender, msg = action(draft, selected, trigger, value, pick)
    if new_draft is no_update and typed:
        new_draft = draft
    return new_draft, new_selected, (version or 0) + 1 if rerender else no_update, msg


def _sync(draft: dict[str, Any], fields: list[dict[str, Any]], tops: list[dict[str, Any]]) -> bool:
    """Copy the form's values into the draft (each input names its job's key); True if anything changed."""
    changed = False
    for item in fields:
        n = D.node(draft, item["id"]["key"])
        name, value = item["id"]["name"], item.get("value")
        if n is not None and n["values"].get(name) != value:
            n["values"][name] = value
            changed = True
    for item in tops:
        name, value = item["id"]["name"], item.get("value") or ""
        if draft.get(name) != value:
            draft[name] = value
            changed = True
    return changed


def _add(job_type: str) -> Callable[..., Change]:
    def add(draft: dict[str, Any], *_: Any) -> Change:
        key = D.add_node(draft, job_type)
        return draft, key, True, ""
    return add


def _clear(draft: dict[str, Any], *_: Any) -> Change:
    return D.new_draft(), None, True, ""


def _remove(draft: dict[str, Any], _s: str | None, trigger: Any, *_: Any) -> Change:
    D.remove_node(draft, trigger["key"])
    return draft, None, True, ""


def _select_chip(draft: dict[str, Any], selected: str | None, trigger: Any, *_: Any) -> Change:
    return no_update, trigger["key"], True, no_update


def _select_point(draft: dict[str, Any], selected: str | None, _t: Any, click: Any, _p: Any) -> Change:
    points = (click or {}).get("points") or []
    key = points[0].get("customdata") if points else None
    return (no_update, key, True, no_update) if D.node(draft, key) else (no_update, no_update, False, no_update)


def _load(draft: dict[str, Any], selected: str | None, _t: Any, _v: Any, pick: str | None) -> Change:
    if not pick:
        return no_update, no_update, False, _msg("Choose a saved draft to load.", bad=True)
    try:
        loaded = data.current().call(lambda c: remote.load_draft(c, pick), timeout=LIST_TIMEOUT)
    except TitanError as exc:
        return no_update, no_update, False, _msg(f"Could not load {pick!r}: {exc}", bad=True)
    if loaded is None:
        return no_update, no_update, False, _msg(f"No draft named {pick!r} (deleted meanwhile?).", bad=True)
    first = loaded["nodes"][0]["key"] if loaded["nodes"] else None
    return loaded, first, True, _msg(f"Loaded draft {pick!r}.")


ACTIONS: dict[str, Callable[..., Change]] = {
    "new-add-run": _add("run"), "new-add-service": _add("service"), "new-clear": _clear, "new-remove": _remove,
    "new-node": _select_chip, "new-graph": _select_point, "new-load": _load,
}


def _msg(text: str, bad: bool = False) -> html.Span:
    return html.Span(text, className="msg-bad" if bad else "msg-ok", **w.data(ok=str(not bad).lower()))


@callback(Output("new-msg", "children", allow_duplicate=True), Output("new-drafts", "options"),
          Output("new-drafts", "value"),
          Input("new-save", "n_clicks"), State("new-draft", "data"), prevent_initial_call=True)
def _save(_n: int | None, doc: Any) -> tuple[Any, Any, Any]:
    draft = D.clean(doc)
    try:
        name = data.current().call(lambda c: remote.save_draft(c, draft), timeout=LIST_TIMEOUT)
        names = data.current().call(remote.list_drafts, timeout=LIST_TIMEOUT)
    except TitanError as exc:
        return _msg(f"Not saved: {exc}", bad=True), no_update, no_update
    return _msg(f"Saved draft {name!r} in the cluster's store."), names, name


@callback(Output("new-msg", "children", allow_duplicate=True), Output("new-go", "pathname"),
          Input("new-deploy", "n_clicks"), State("new-draft", "data"), prevent_initial_call=True,
          running=[(Output("new-deploy", "disabled"), True, False)])
def _deploy(_n: int | None, doc: Any) -> tuple[Any, Any]:
    draft = D.clean(doc)
    try:
        run_id = data.current().call(lambda c: remote.deploy(c, draft), timeout=DEPLOY_TIMEOUT)
    except TitanError as exc:
        return _msg(f"Not deployed: {exc}", bad=True), no_update
    return _msg(f"Deployed as run {run_id}."), f"/runs/{run_id}"


@callback(Output("new-msg", "children", allow_duplicate=True), Output("new-scripts", "data"),
          Output(_fid("file", FIELD, ALL), "options"), Output(_fid("file", FIELD, ALL), "value"),
          Input(_fid("file", "new-upload", ALL), "contents"), State(_fid("file", "new-upload", ALL), "filename"),
          prevent_initial_call=True)
def _upload(contents: list[str | None], filenames: list[str | None]) -> tuple[Any, ...]:
    """A script uploaded from the form: stored as an asset and chosen as the job's file (one form at a time)."""
    same = [no_update] * len(contents)
    if not contents or not contents[0] or not filenames[0]:
        return no_update, no_update, same, same
    filename, content = filenames[0], base64.b64decode(contents[0].partition(",")[2])
    try:
        name = data.current().call(lambda c: remote.upload_script(c, filename, content), timeout=DEPLOY_TIMEOUT)
        scripts = data.current().call(remote.list_scripts, timeout=LIST_TIMEOUT)
    except TitanError as exc:
        return _msg(f"Not uploaded: {exc}", bad=True), no_update, same, same
    return _msg(f"Uploaded {name!r} ({len(content)} bytes)."), scripts, [scripts], [name]


@callback(Output("new-download", "data"), Input("new-get-yaml", "n_clicks"), Input("new-get-python", "n_clicks"),
          State("new-yaml", "children"), State("new-python", "children"), State("new-draft", "data"),
          prevent_initial_call=True)
def _download(_y: int | None, _p: int | None, yaml_text: str, python_text: str, doc: Any) -> Any:
    name = D.clean(doc).get("name") or "pipeline"
    yaml_wanted = ctx.triggered_id == "new-get-yaml"
    text, suffix = (yaml_text, "yaml") if yaml_wanted else (python_text, "py")
    return {"content": text, "filename": f"{name}.{suffix}", "type": "text/plain", "base64": False}
