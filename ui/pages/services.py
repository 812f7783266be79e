"""Services (``/services``): every service with its state, worker, address and restarts; Stop / Restart."""

from __future__ import annotations

import time
from typing import Any

from dash import ALL, Input, Output, callback, ctx, html, no_update

from ui import data, servicefeed
from ui import widgets as w
from ui.live import LiveView, register_page
from ui.model import Model

register_page(__name__, path="/services", name="Services", order=3, title="titan · services")

LIVE = ("STARTING", "READY", "RESTARTING", "QUEUED", "PENDING")  # states in which Stop / Restart make sense


def address_link(svc: dict[str, Any]) -> Any:
    addr = svc.get("address")
    if not addr:
        return html.Span("—", className="muted")
    return html.A(addr, href=f"http://{addr}/", target="_blank", className="mono svc-address")


def buttons(svc: dict[str, Any]) -> html.Td:
    if svc["state"] not in LIVE:
        return html.Td("")
    sid = svc["id"]
    return html.Td([
        html.Button("Stop", id={"type": "svc-stop", "index": sid}, className="btn svc-stop", n_clicks=0),
        html.Button("Restart", id={"type": "svc-restart", "index": sid}, className="btn svc-restart", n_clicks=0),
    ])


def row(svc: dict[str, Any], now: float) -> html.Tr:
    up = w.duration(svc["uptime"]) if svc.get("uptime") is not None else "—"
    return html.Tr([
        html.Td([html.Span(svc["job_id"], className="mono svc-name"), html.Br(),
                 w.run_link(svc["run_id"], svc["run_id"])]),
        html.Td(w.badge(svc["state"])),
        html.Td(svc.get("worker") or "—", className="mono"),
        html.Td(address_link(svc)),
        html.Td(str(svc.get("restarts", 0))),
        html.Td(up),
        html.Td(svc.get("error") or "", className="muted svc-error"),
        buttons(svc),
    ], className="svc-row", id=f"svc-{svc['id']}", **w.data(service=svc["id"], state=svc["state"],
                                                             worker=svc.get("worker") or ""))


def render(_model: Model, _params: dict[str, Any]) -> list[Any]:
    items = servicefeed.services()
    if not items:
        why = servicefeed.error()
        return [w.empty(f"no services{': ' + why if why else ' yet: jobs with type: service appear here'}")]
    now = time.time()
    head = html.Tr([html.Th(t) for t in ("service", "state", "worker", "address", "restarts", "up", "", "")])
    return [html.Table([html.Thead(head), html.Tbody([row(s, now) for s in reversed(items)])],
                       className="table services", id="services-table")]


view = LiveView("services", key=lambda _m, _p: servicefeed.key(), render=render)


@callback(
    Output("services-msg", "children"),
    Input({"type": "svc-stop", "index": ALL}, "n_clicks"),
    Input({"type": "svc-restart", "index": ALL}, "n_clicks"),
    prevent_initial_call=True,
)
def act(_stops: list[int | None], _restarts: list[int | None]) -> Any:
    trigger = ctx.triggered_id
    if not isinstance(trigger, dict) or not any(t.get("value") for t in ctx.triggered):
        return no_update  # buttons (re)rendered, not clicked
    sid = str(trigger["index"])
    try:
        if trigger["type"] == "svc-stop":
            out = data.current().call(lambda c: c.stop_service(sid))
            msg = f"{out['id']} stopping (SIGKILL after {out['stop_grace']:g}s)"
        else:
            out = data.current().call(lambda c: c.restart_service(sid))
            msg = f"{out['id']} restarting"
    except Exception as exc:
        msg = f"{sid}: {exc}"
    servicefeed.invalidate()
    return msg


def layout(**_query: Any) -> html.Div:
    return html.Div([html.H1("Services"), html.Div(id="services-msg", className="muted"), view.layout()])
