"""Small pieces every page uses: state colours, badges, progress bars, times and durations."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from dash import dcc, html

from titan_zmq.states import TERMINAL_JOB_STATES, JobState, RunState

# One colour per job state, used by badges, bars, the DAG and the timeline; legends list them in this order.
# A new JobState is one entry here (tests/unit/test_ui_rungraph.py checks that every state has one).
JOB_COLORS: dict[str, str] = {
    JobState.PENDING: "#aab2bf",
    JobState.DELAYED: "#c9a227",
    JobState.QUEUED: "#7fa7dd",
    JobState.RUNNING: "#2f6fd6",
    JobState.AWAITING_APPROVAL: "#d6409f",
    JobState.COMPLETED: "#2e9d5b",
    JobState.FAILED: "#e08a2e",
    JobState.DEAD: "#c0392b",
    JobState.CANCELLED: "#7f5aa2",
    JobState.SKIPPED: "#8d8474",
    JobState.REJECTED: "#9f1239",  # a gate a human refused
    JobState.TIMED_OUT: "#b45309",  # a gate nobody decided in time
    JobState.STARTING: "#60a5fa",  # a service waiting for its health check
    JobState.READY: "#0e9f9a",  # a service answering
    JobState.RESTARTING: "#d97706",  # a service between an exit and its next start
    JobState.STOPPED: "#475569",  # a service stopped on purpose
}
RUN_COLORS: dict[str, str] = {
    RunState.RUNNING: JOB_COLORS[JobState.RUNNING],
    RunState.SUCCEEDED: JOB_COLORS[JobState.COMPLETED],
    RunState.FAILED: JOB_COLORS[JobState.DEAD],
    RunState.CANCELLED: JOB_COLORS[JobState.CANCELLED],
}
UNKNOWN_COLOR = "#6b7280"


def job_states() -> list[str]:
    """Every job state, in legend order: the table's, then any state of the enum it lacks."""
    known = {s.value for s in JobState}
    return [s for s in JOB_COLORS if s in known] + [s.value for s in JobState if s.value not in JOB_COLORS]


def legend(states: list[str] | None = None, counts: Mapping[str, int] | None = None) -> html.Div:
    """A colour key: a swatch per state (with its count when given); ``data-state`` on each."""
    items = []
    for state in states or job_states():
        n = (counts or {}).get(state)
        items.append(html.Span([html.Span(className="swatch", style={"backgroundColor": color(state)}), state,
                                html.Span(f" {n}", className="muted") if n else ""],
                               className="legend-item", **data(state=state)))
    return html.Div(items, className="legend", id="legend")


def data(**attrs: Any) -> dict[str, Any]:
    """``data-*`` attributes for a component (``**data(run=run_id)``): what tests and scripts select on."""
    return {f"data-{k.replace('_', '-')}": str(v) for k, v in attrs.items()}


def color(state: str | None) -> str:
    return JOB_COLORS.get(str(state), RUN_COLORS.get(str(state), UNKNOWN_COLOR))


def badge(state: str | None) -> html.Span:
    """A state as a coloured pill; ``data-state`` lets tests read it without parsing text."""
    return html.Span(str(state or "?"), className="badge", style={"backgroundColor": color(state)},
                     **data(state=state))


def progress(counts: Mapping[str, int], total: int) -> html.Div:
    """Done/total as a bar made of one segment per job state (in :data:`JOB_COLORS` order)."""
    total = max(total, sum(counts.values()), 1)
    done = sum(counts.get(s, 0) for s in TERMINAL_JOB_STATES)
    segments = [
        html.Div(className="seg", title=f"{state}: {n}", style={"width": f"{100 * n / total:.2f}%",
                                                                 "backgroundColor": color(state)})
        for state in JOB_COLORS if (n := counts.get(state, 0))
    ]
    return html.Div([html.Div(segments, className="bar"), html.Span(f"{done}/{total}", className="bar-label")],
                    className="progress", title=", ".join(f"{s} {n}" for s, n in counts.items() if n))


def slots_bar(used: int, total: int) -> html.Div:
    pct = 100 * used / total if total else 0
    return html.Div([
        html.Div(html.Div(className="seg", style={"width": f"{pct:.1f}%", "backgroundColor": color("RUNNING")}),
                 className="bar"),
        html.Span(f"{used}/{total} slots", className="bar-label"),
    ], className="progress")


def clock(ts: float | None) -> str:
    """A wall-clock time: HH:MM:SS today, else the date too."""
    if not ts:
        return "—"
    t = time.localtime(ts)
    if time.strftime("%Y-%m-%d", t) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", t)
    return time.strftime("%Y-%m-%d %H:%M", t)


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "—"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def run_duration(created_at: float, finished_at: float | None, now: float | None = None) -> str:
    return duration((finished_at or (now or time.time())) - created_at)


def run_link(run_id: str, text: str | None = None) -> dcc.Link:
    return dcc.Link(text or run_id, href=f"/runs/{run_id}", className="mono")


def empty(text: str) -> html.Div:
    return html.Div(text, className="empty")


def figure_card(label: str, value: Any, note: str = "", ok: bool = True) -> html.Div:
    return html.Div([html.Div(label, className="fig-label"), html.Div(str(value), className="fig-value"),
                     html.Div(note, className="fig-note")], className="fig" + ("" if ok else " fig-bad"),
                    id=f"fig-{label.replace(' ', '-').lower()}", **data(value=value))
