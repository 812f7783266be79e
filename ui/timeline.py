"""The Run page's timeline: every attempt of every job as a bar in a lane per worker slot, over time.

No I/O: jobs with their ``attempts_log`` in, bars and a Plotly figure out. The broker does not say
which slot of a worker ran an attempt, so lanes are made the way a Gantt chart of a machine would be:
a worker's attempts, by start, each take its lowest lane free at that moment (interval partitioning),
so a worker shows as many lanes as it ran attempts at once: parallelism, idle gaps and retries show.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

Jobs = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Bar:
    job: str
    attempt: int
    worker: str
    lane: str  # "<worker> · <n>"
    start: float
    end: float
    outcome: str  # the attempt's end (COMPLETED, FAILED, DEAD, LOST, CANCELLED...) or RUNNING
    running: bool
    exit_code: int | None


def bars(jobs: Jobs, now: float) -> list[Bar]:
    """Every attempt that reached a worker, with its lane; a running one ends at ``now``."""
    raw: list[tuple[str, int, str, float, float, str, bool, int | None]] = []
    for job_id, j in jobs.items():
        for a in j.get("attempts_log") or []:
            start = a.get("started_at") or a.get("dispatched_at")
            worker = a.get("worker")
            if not start or not worker:
                continue
            running = a.get("finished_at") is None
            end = now if running else float(a["finished_at"])
            outcome = "RUNNING" if running else str(a.get("outcome") or "?")
            raw.append((job_id, int(a.get("attempt") or 0), str(worker), float(start), max(end, float(start)),
                        outcome, running, a.get("exit_code")))
    raw.sort(key=lambda r: (r[2], r[3], r[0]))
    out: list[Bar] = []
    lanes: dict[str, list[float]] = {}  # worker -> end of the last attempt in each lane
    for job_id, attempt, worker, start, end, outcome, running, code in raw:
        ends = lanes.setdefault(worker, [])
        k = next((i for i, e in enumerate(ends) if e <= start), len(ends))
        if k == len(ends):
            ends.append(end)
        else:
            ends[k] = end
        out.append(Bar(job_id, attempt, worker, f"{worker} · {k + 1}", start, end, outcome, running, code))
    return out


def figure(items: list[Bar], color: Callable[[str], str], height_per_lane: int = 26) -> go.Figure:
    """Horizontal bars on a time axis, one trace per outcome (the legend), hover with the details."""
    lanes = sorted({b.lane for b in items}, key=lambda lane: (lane.rsplit(" · ", 1)[0], int(lane.rsplit(" · ", 1)[1])))
    traces = []
    for outcome in sorted({b.outcome for b in items}):
        group = [b for b in items if b.outcome == outcome]
        traces.append(go.Bar(
            orientation="h", name=outcome, y=[b.lane for b in group],
            base=[_iso(b.start) for b in group], x=[max(1.0, (b.end - b.start) * 1000) for b in group],
            marker={"color": color(outcome), "line": {"width": 0.5, "color": "#ffffff"}},
            text=[f"{b.job} #{b.attempt}" if b.attempt > 1 else b.job for b in group], textposition="inside",
            insidetextanchor="start", textfont={"color": "#ffffff", "size": 11},
            customdata=[[b.job, b.attempt, f"{b.end - b.start:.2f}s", "" if b.exit_code is None else b.exit_code]
                        for b in group],
            hovertemplate="%{customdata[0]} #%{customdata[1]}<br>%{customdata[2]} · exit %{customdata[3]}"
                          "<extra>" + outcome + "</extra>"))
    fig = go.Figure(traces)
    fig.update_layout(
        barmode="overlay", height=max(200, 90 + height_per_lane * len(lanes)), bargap=0.25,
        margin={"l": 10, "r": 10, "t": 30, "b": 40}, plot_bgcolor="#fff", paper_bgcolor="#fff",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        xaxis={"type": "date", "gridcolor": "#eef0f3", "title": None},
        yaxis={"categoryorder": "array", "categoryarray": lanes[::-1], "automargin": True, "title": None},
        uirevision="keep")
    return fig


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).isoformat(timespec="milliseconds")
