"""Live regions: the one way a page shows data that changes (and the reason a poll is cheap).

A :class:`LiveView` is a ``<div>`` whose children are rendered from the model, plus a ``dcc.Interval``
and a ``dcc.Store`` holding the *key* of what the browser shows. Each tick the browser sends the key
back; the callback computes the current key (version counters from :class:`ui.model.Model` and
the values of the page's controls) and, when it is unchanged, answers ``no_update`` without
rendering anything. So an idle page costs one tiny request a second, and a busy one a render per
change, however many jobs there are.

A page module makes its views at import time and puts ``view.layout(params)`` in its layout::

    view = LiveView("runs", key=lambda m, p, state: [m.version("runs"), state],
                    render=render_table, inputs=[Input("runs-state", "value")])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html, no_update

from ui import data
from ui.model import Model

KeyFn = Callable[..., Any]  # (model, params, *input values) -> JSON-able key
RenderFn = Callable[..., Any]  # (model, params, *input values) -> Dash children

TICK_MS = 1000  # how often a live region asks whether it changed


def register_page(module: str, **options: Any) -> None:
    """``dash.register_page`` (typed): a page module's first call. Options of ours: ``order`` (its place
    in the nav bar) and ``nav=False`` (kept out of it, e.g. a page under another one's path)."""
    dash.register_page(module, **options)  # type: ignore[no-untyped-call]


class LiveView:
    """A region of a page re-rendered whenever its key changes (see the module's docstring)."""

    def __init__(self, page: str, key: KeyFn, render: RenderFn, inputs: Sequence[Input] = (),
                 interval_ms: int = TICK_MS) -> None:
        self.page, self.key_fn, self.render_fn, self.interval_ms = page, key, render, interval_ms
        self.ids = {part: f"{page}-{part}" for part in ("tick", "seen", "params", "body")}
        callback(
            Output(self.ids["body"], "children"),
            Output(self.ids["seen"], "data"),
            Input(self.ids["tick"], "n_intervals"),
            *inputs,
            State(self.ids["seen"], "data"),
            State(self.ids["params"], "data"),
        )(self._update)

    def key(self, model: Model, params: dict[str, Any], *values: Any) -> Any:
        return _jsonable(self.key_fn(model, params, *values))

    def layout(self, params: dict[str, Any] | None = None, *values: Any) -> html.Div:
        """The region, rendered now (no blank first second) with the given control values."""
        params = params or {}
        m = data.model()
        return html.Div([
            dcc.Interval(id=self.ids["tick"], interval=self.interval_ms),
            dcc.Store(id=self.ids["params"], data=params),
            dcc.Store(id=self.ids["seen"], data=self.key(m, params, *values)),
            html.Div(self.render_fn(m, params, *values), id=self.ids["body"]),
        ], className="live", id=f"{self.page}-live")

    def _update(self, _tick: int | None, *args: Any) -> tuple[Any, Any]:
        *values, seen, params = args
        m = data.model()
        key = self.key(m, params or {}, *values)
        if key == seen:
            return no_update, no_update
        return self.render_fn(m, params or {}, *values), key


def _jsonable(key: Any) -> Any:
    """The key as it comes back from the browser (tuples become lists), so the two compare equal."""
    if isinstance(key, tuple | list):
        return [_jsonable(k) for k in key]
    return key
