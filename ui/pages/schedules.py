"""Schedules (``/schedules``): each cron schedule, its next fire, its recent runs, and pause/resume.

Schedules are few and change rarely, so the page asks the broker for them (through the UI's one link,
:func:`ui.data.BrokerSync.call`) at most once a tick, and re-renders only when the answer changed.
"""

from __future__ import annotations

import json
import time
from typing import Any

from dash import ALL, Input, Output, callback, ctx, html, no_update

from titan_zmq.errors import TitanError
from ui import data
from ui import widgets as w
from ui.live import LiveView, register_page
from ui.model import Model

register_page(__name__, path="/schedules", name="Schedules", order=3, title="titan · schedules")

HISTORY_SHOWN = 5


def fetch() -> list[dict[str, Any]] | str:
    """The schedules, or why they cannot be shown."""
    try:
        return data.current().call(lambda c: c.schedules(), timeout=3.0)
    except Exception as exc:  # the broker is down or slow: say so, the banner says the rest
        return f"schedules unavailable: {exc}"


def row(s: dict[str, Any]) -> html.Tr:
    history = [html.Span([w.run_link(h["run_id"], w.clock(h["tick"])), " ", w.badge(h["state"])]
                         if h.get("run_id") else html.Span(f"{w.clock(h['tick'])} {h['outcome']}", className="muted"),
                         className="sched-hist") for h in s["history"][:HISTORY_SHOWN]]
    toggle = "Pause" if s["enabled"] else "Resume"
    return html.Tr([
        html.Td(html.Span(s["name"], className="mono")),
        html.Td(html.Span(s["cron"], className="mono"), title=s["timezone"]),
        html.Td(html.Span("on" if s["enabled"] else "paused", className="tag", **w.data(enabled=s["enabled"]))),
        html.Td(w.clock(s["next_fire"]) if s["next_fire"] else "—", className="next-fire"),
        html.Td([w.run_link(s["last_run"]), " ", w.badge(s["last_state"])] if s["last_run"] else "—"),
        html.Td(history),
        html.Td(f"{s['catchup']} / {s['overlap']}", className="muted"),
        html.Td(html.Button(toggle, id={"type": "sched-toggle", "name": s["name"]}, className="btn btn-sm",
                            n_clicks=0)),
    ], **w.data(schedule=s["name"]))


def render(_model: Model, _params: dict[str, Any], items: Any = None) -> list[Any]:
    items = fetch() if items is None else items
    if isinstance(items, str):
        return [w.empty(items)]
    if not items:
        return [w.empty("no schedules: titan schedule add PIPELINE.yaml")]
    head = html.Tr([html.Th(t) for t in ("name", "cron", "state", "next fire", "last run", "recent", "catchup / "
                                         "overlap", "")])
    return [html.Table([html.Thead(head), html.Tbody([row(s) for s in items])], className="sched-table",
                       id="schedules-table")]


_last: dict[str, Any] = {}


def key(_model: Model, _params: dict[str, Any]) -> Any:
    items = fetch()
    _last["items"] = items
    # the clock in the key moves "next fire" along; the answer itself says when anything else changed
    return [json.dumps(items, sort_keys=True, default=str), int(time.time()) // 5]


view = LiveView("schedules", key=key, render=lambda m, p: render(m, p, _last.get("items")))


@callback(Output("schedules-action", "children"), Input({"type": "sched-toggle", "name": ALL}, "n_clicks"),
          prevent_initial_call=True)
def toggle(_clicks: list[int]) -> Any:
    trigger = ctx.triggered_id
    if not trigger or not any(t.get("value") for t in ctx.triggered):
        return no_update
    name = str(trigger["name"])
    try:
        current = [s for s in data.current().call(lambda c: c.schedules()) if s["name"] == name]
        if current and current[0]["enabled"]:
            data.current().call(lambda c: c.pause_schedule(name))
            return f"{name} paused"
        data.current().call(lambda c: c.resume_schedule(name))
        return f"{name} resumed"
    except TitanError as exc:
        return f"error: {exc}"


def layout(**_query: Any) -> html.Div:
    return html.Div([html.H1("Schedules"), html.Div(id="schedules-action", className="muted"), view.layout()])
