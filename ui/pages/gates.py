"""Gates (``/gates``): approval gates waiting for a decision, with Approve / Reject, and the decided history.

Gates are not in the UI's model (events carry job states, not a gate's question or decision), so this
page asks the broker (``TitanClient.gates``, one LIST_GATES request) through :meth:`ui.data.BrokerSync.call`,
at most once per ``REFRESH_EVERY`` seconds for the whole UI process, whatever the number of browsers; the
live region's key is a fingerprint of that list, so the page re-renders only when a gate changes (a
comment being typed is not wiped by a tick). A decision is sent as the name in "Deciding as" (kept in
the browser; default: the UI process's user), and the list is asked for again at once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from dash import ALL, Input, Output, State, callback, ctx, dcc, html, no_update

from client.api import default_user
from titan_zmq.errors import TitanError
from ui import data
from ui import widgets as w
from ui.live import LiveView, register_page
from ui.model import Model

register_page(__name__, path="/gates", name="Gates", order=3, title="titan · gates")

REFRESH_EVERY = 1.0  # seconds between LIST_GATES requests (shared by every browser)
HISTORY_SHOWN = 200  # decided gates shown


class GateCache:
    """The broker's gate list, asked for at most every REFRESH_EVERY seconds (one request for all browsers)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at = 0.0
        self.gates: list[dict[str, Any]] = []
        self.error: str | None = None

    def get(self) -> tuple[list[dict[str, Any]], str | None]:
        with self.lock:
            if time.monotonic() - self.at >= REFRESH_EVERY:
                self.at = time.monotonic()
                try:
                    self.gates, self.error = data.current().call(lambda c: c.gates(), timeout=5.0), None
                except (TitanError, TimeoutError) as exc:
                    self.error = str(exc) or type(exc).__name__
            return self.gates, self.error

    def stale(self) -> None:
        with self.lock:
            self.at = 0.0


cache = GateCache()


def _key_of(g: dict[str, Any]) -> str:
    return f"{g['run_id']}|{g['gate_id']}"


def pending_card(g: dict[str, Any]) -> html.Div:
    k = _key_of(g)
    return html.Div([
        html.Div([
            html.Span(g["gate_id"], className="mono gate-id"), w.badge(g["state"]),
            w.run_link(g["run_id"], g.get("run_name") or g["run_id"]),
            html.Span(f"agent run {g['agent_run_id']}" if g.get("agent_run_id") else "", className="muted"),
        ], className="card-head gate-head"),
        html.Div(g.get("message") or "(no message)", className="gate-message"),
        html.Div(f"waiting since {w.clock(g.get('waiting_since'))} · deadline {w.clock(g.get('deadline'))}",
                 className="muted gate-times"),
        html.Div([
            dcc.Input(id={"type": "gate-comment", "key": k}, type="text", className="filter gate-comment",
                      placeholder="comment / reason…"),
            html.Button("Approve", id={"type": "gate-approve", "key": k}, className="btn gate-approve"),
            html.Button("Reject", id={"type": "gate-reject", "key": k}, className="btn gate-reject"),
        ], className="filters gate-actions"),
    ], className="card gate", **w.data(run=g["run_id"], gate=g["gate_id"], state=g["state"]))


def history_row(g: dict[str, Any]) -> html.Tr:
    return html.Tr([
        html.Td(w.run_link(g["run_id"], g.get("run_name") or g["run_id"])),
        html.Td(g["gate_id"], className="mono"),
        html.Td(w.badge(g["state"])),
        html.Td(g.get("decision") or "", className="decision"),
        html.Td(g.get("decided_by") or "", className="decided-by"),
        html.Td(w.clock(g.get("decided_at"))),
        html.Td(g.get("comment") or "", className="comment"),
        html.Td(g.get("message") or "", className="muted"),
    ], **w.data(run=g["run_id"], gate=g["gate_id"], state=g["state"], decision=g.get("decision")))


def render(_model: Model, _params: dict[str, Any]) -> list[Any]:
    gates, error = cache.get()
    pending = [g for g in gates if g.get("decision") is None]
    decided = [g for g in gates if g.get("decision") is not None][:HISTORY_SHOWN]
    out: list[Any] = [w.empty(f"cannot list gates: {error}")] if error else []
    out.append(html.H2(f"Waiting for a decision ({len(pending)})"))
    out.append(html.Div([pending_card(g) for g in pending], className="gate-list", id="gates-pending")
               if pending else w.empty("no gate is waiting"))
    out.append(html.H2("Decided"))
    cols = ("Run", "Gate", "State", "Decision", "By", "When", "Comment", "Message")
    out.append(html.Table([html.Thead(html.Tr([html.Th(c) for c in cols])),
                           html.Tbody([history_row(g) for g in decided])], className="table", id="gates-history")
               if decided else w.empty("no decision yet"))
    return out


def key(_model: Model, _params: dict[str, Any]) -> list[Any]:
    gates, error = cache.get()
    return [error, [[_key_of(g), g["state"], g.get("decided_at")] for g in gates]]


view = LiveView("gates", key=key, render=render)


def layout(**_query: Any) -> html.Div:
    return html.Div([
        html.H1("Gates"),
        html.Div([
            html.Label("Deciding as", htmlFor="gate-user", className="muted"),
            dcc.Input(id="gate-user", type="text", value=default_user(), className="filter", persistence=True),
            html.Span(id="gate-result", className="gate-result"),
        ], className="filters"),
        view.layout(),
    ])


@callback(
    Output("gate-result", "children"),
    Input({"type": "gate-approve", "key": ALL}, "n_clicks"),
    Input({"type": "gate-reject", "key": ALL}, "n_clicks"),
    State({"type": "gate-comment", "key": ALL}, "value"),
    State({"type": "gate-comment", "key": ALL}, "id"),
    State("gate-user", "value"),
    prevent_initial_call=True,
)
def decide(approves: list[int | None], rejects: list[int | None], comments: list[str | None],
           comment_ids: list[dict[str, str]], user: str | None) -> Any:
    """A click on Approve or Reject: the decision goes to the broker with the comment and the user name."""
    trigger = ctx.triggered_id
    if not isinstance(trigger, dict) or not (ctx.triggered and ctx.triggered[0].get("value")):
        return no_update  # a re-render added buttons: nothing was clicked
    k = str(trigger["key"])
    run_id, _, gate_id = k.partition("|")
    comment = next((c for c, i in zip(comments, comment_ids, strict=False) if i["key"] == k), None) or None
    approve = trigger["type"] == "gate-approve"
    by = (user or "").strip() or default_user()
    try:
        out = data.current().call(
            lambda c: c.approve(run_id, gate_id, comment, by) if approve else c.reject(run_id, gate_id, comment, by))
    except (TitanError, TimeoutError) as exc:
        return html.Span(f"{gate_id}: {exc}", className="bad", **w.data(outcome="error"))
    finally:
        cache.stale()
    return html.Span(f"{gate_id} of {run_id}: {out['decision']} by {out['decided_by']}",
                     **w.data(outcome=out["decision"]))
