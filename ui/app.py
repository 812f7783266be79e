"""The Dash app: the shell every page lives in (nav bar, broker banner) and the page registry.

Pages are Dash "pages": each module of ``ui/pages/`` calls ``dash.register_page`` and holds its own
layout and callbacks, and Dash imports every such module when the app is made. A new page is one new
file there (``order=`` places it in the nav bar; ``nav=False`` keeps it out, as for a run's page).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dash
from dash import Dash, Input, Output, State, callback, dcc, html, no_update

from ui import auth, data, logtail
from ui.data import BrokerSync

HERE = Path(__file__).resolve().parent
BANNER_MS = 1000  # how often the page asks whether the broker is reachable


def create_app(sync: BrokerSync, token: str, port: int) -> Dash:
    """The app, reading ``sync``'s model, guarded by ``token`` (cookie named after ``port``)."""
    data.install(sync)
    app = Dash(
        "ui", use_pages=True, pages_folder=str(HERE / "pages"), assets_folder=str(HERE / "assets"),
        serve_locally=True, title="titan", update_title="", suppress_callback_exceptions=True,
    )
    auth.install(app.server, token, port)
    logtail.install(app.server)  # the full-log download, behind the same guard
    app.layout = shell
    return app


def shell() -> html.Div:
    return html.Div([
        html.Header([
            dcc.Link([html.Span("titan", className="brand-name"), html.Span("zmq", className="brand-sub")],
                     href="/", className="brand"),
            html.Nav(nav_links("/"), id="nav"),
            html.Span(id="broker-state", className="broker-state"),
        ], className="topbar"),
        html.Div(id="banner", className="banner hidden", role="alert"),
        dcc.Interval(id="banner-tick", interval=BANNER_MS),
        dcc.Store(id="banner-seen"),
        html.Main(dash.page_container, className="page"),
    ])


def nav_links(pathname: str | None) -> list[Any]:
    pages = sorted((p for p in dash.page_registry.values() if p.get("nav", True)), key=lambda p: p.get("order", 99))
    out = []
    for p in pages:
        path = p["path"]
        active = pathname == path or (path != "/" and (pathname or "").startswith(path))
        out.append(dcc.Link(p["name"], href=path, className="nav-link active" if active else "nav-link",
                            id=f"nav-{p['module'].rsplit('.', 1)[-1]}"))
    return out


@callback(Output("nav", "children"), Input("_pages_location", "pathname"))
def _highlight(pathname: str | None) -> list[Any]:
    return nav_links(pathname)


@callback(
    Output("banner", "children"), Output("banner", "className"), Output("broker-state", "children"),
    Output("banner-seen", "data"),
    Input("banner-tick", "n_intervals"), State("banner-seen", "data"),
)
def _banner(_tick: int | None, seen: int | None) -> tuple[Any, ...]:
    m = data.model()
    version = m.version("conn")
    if version == seen:
        return no_update, no_update, no_update, no_update
    conn = m.conn
    address = data.current().address
    if conn.up:
        return "", "banner hidden", [html.Span(className="dot ok"), f"broker {address}"], version
    since = time.strftime("%H:%M:%S", time.localtime(conn.since)) if conn.since else "start-up"
    text = [html.B(f"Broker unreachable since {since}"),
            f" ({address}). Showing the last known state; this page recovers by itself when the broker is back."]
    return text, "banner", [html.Span(className="dot bad"), "broker down"], version
