"""A run's DAG as the Run page draws it: layers by dependency depth, positions, and a grouped view of big runs.

No I/O and no Dash: jobs in (``{job_id: {"state", "depends_on", ...}}``), plain data out, so the layout
is unit-tested without a browser (tests/unit/test_ui_rungraph.py).

- **Layers**: a job's layer is the length of the longest path from a root to it (roots are layer 0),
  drawn left to right. Within a layer jobs are ordered by the mean position of their parents
  (one barycentre pass: fewer crossing edges), then by submission order; a layer taller than
  ``ROWS_PER_COLUMN`` wraps into several columns, so a fan-out of 1,000 is a block, not a needle.
- **Grouped view** (runs over ``DETAIL_LIMIT`` jobs, unless the user asks for every job): one node per
  (layer, state) with its count, edges between groups; clicking a group expands its whole layer into
  its jobs (``expanded``), clicking again folds it. States move jobs between groups, so the grouped
  elements are recomputed on a change (O(jobs + edges), a millisecond for 1,000 jobs); the detail view
  is patched job by job (O(changes)).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from titan_zmq.states import JobState

DETAIL_LIMIT = 200  # runs with more jobs open grouped by layer and state
ROWS_PER_COLUMN = 25  # jobs stacked in one column before a layer wraps into the next
COL_GAP = 190  # px between columns (a node's label fits)
LAYER_GAP = 60  # px added between layers
ROW_GAP = 46  # px between jobs in a column
GROUP_GAP = 80  # px between the state groups of one layer
GROUP_COL = 170  # px a folded layer takes in the grouped view
LABEL_CHARS = 22  # a job id longer than this is cut in its label (the side panel shows it whole)

Jobs = Mapping[str, Mapping[str, Any]]


def layers(jobs: Jobs) -> dict[str, int]:
    """Each job's layer: 0 for a job without parents, else 1 + its deepest parent's layer. Parents
    that are not in ``jobs`` are ignored; a job on a cycle (never accepted by the broker) gets 0."""
    parents = {j: [p for p in (spec.get("depends_on") or []) if p in jobs] for j, spec in jobs.items()}
    children: dict[str, list[str]] = {j: [] for j in jobs}
    waiting = {j: len(ps) for j, ps in parents.items()}
    for j, ps in parents.items():
        for p in ps:
            children[p].append(j)
    depth = {j: 0 for j in jobs}
    todo = [j for j, n in waiting.items() if n == 0]
    while todo:
        j = todo.pop()
        for c in children[j]:
            depth[c] = max(depth[c], depth[j] + 1)
            waiting[c] -= 1
            if waiting[c] == 0:
                todo.append(c)
    return depth


@dataclass
class Layout:
    """Where each job goes: its layer, its place in the layer, and its position (px)."""

    layer: dict[str, int]
    by_layer: list[list[str]]  # jobs of each layer, in drawing order
    pos: dict[str, tuple[float, float]]
    order: list[str] = field(default_factory=list)  # every job, layer by layer: the index of a node
    layer_x: list[float] = field(default_factory=list)  # x of each layer's first column

    @property
    def index(self) -> dict[str, int]:
        return {j: i for i, j in enumerate(self.order)}


def layout(jobs: Jobs) -> Layout:
    """Layers and positions for every job (see the module's docstring)."""
    layer = layers(jobs)
    seq = {j: i for i, j in enumerate(jobs)}
    by_layer: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for j in jobs:
        by_layer[layer[j]].append(j)
    rank: dict[str, float] = {}
    pos: dict[str, tuple[float, float]] = {}
    layer_x: list[float] = []
    x = 0.0
    for members in by_layer:
        def bary(j: str) -> tuple[float, int]:
            ps = [rank[p] for p in (jobs[j].get("depends_on") or []) if p in rank]
            return (sum(ps) / len(ps) if ps else -1.0, seq[j])
        members.sort(key=bary)
        layer_x.append(x)
        rows = min(len(members), ROWS_PER_COLUMN)
        for i, j in enumerate(members):
            rank[j] = i / max(1, len(members) - 1)
            col, row = divmod(i, ROWS_PER_COLUMN)
            pos[j] = (x + col * COL_GAP, (row - (rows - 1) / 2) * ROW_GAP)
        x += COL_GAP * max(1, -(-len(members) // ROWS_PER_COLUMN)) + LAYER_GAP
    return Layout(layer, by_layer, pos, [j for members in by_layer for j in members], layer_x)


def label(job_id: str) -> str:
    return job_id if len(job_id) <= LABEL_CHARS else job_id[: LABEL_CHARS - 1] + "…"


def job_node(job_id: str, state: str | None, xy: tuple[float, float]) -> dict[str, Any]:
    return {"data": {"id": job_id, "label": label(job_id), "state": str(state), "kind": "job"},
            "position": {"x": xy[0], "y": xy[1]}}


def detail_elements(jobs: Jobs, lay: Layout) -> list[dict[str, Any]]:
    """Every job a node (in ``lay.order``: node i is ``lay.order[i]``), then an edge per dependency."""
    nodes = [job_node(j, jobs[j].get("state"), lay.pos[j]) for j in lay.order]
    return nodes + [edge(p, j) for j in lay.order for p in (jobs[j].get("depends_on") or []) if p in jobs]


def edge(source: str, target: str, count: int = 1) -> dict[str, Any]:
    return {"data": {"id": f"{source}->{target}", "source": source, "target": target, "count": count}}


def group_id(layer: int, state: str) -> str:
    return f"group:{layer}:{state}"


def state_order(states: Iterable[str]) -> list[str]:
    """States in the legend's order (JobState's), unknown ones last."""
    order = {s.value: i for i, s in enumerate(JobState)}
    return sorted(set(states), key=lambda s: (order.get(s, len(order)), s))


def grouped_elements(jobs: Jobs, lay: Layout, expanded: Iterable[int] = ()) -> list[dict[str, Any]]:
    """The grouped view: per layer, one node per state with its count (or every job of an
    ``expanded`` layer), and one edge per pair of connected nodes, labelled with how many
    dependencies it stands for."""
    open_layers = set(expanded)
    node_of: dict[str, str] = {}
    nodes: list[dict[str, Any]] = []
    x = 0.0
    for n, members in enumerate(lay.by_layer):
        if n in open_layers:  # its jobs where the detail layout puts them, shifted to this layer's place
            width = 0.0
            for j in members:
                node_of[j] = j
                dx = lay.pos[j][0] - lay.layer_x[n]
                width = max(width, dx)
                nodes.append(job_node(j, jobs[j].get("state"), (x + dx, lay.pos[j][1])))
            x += width + COL_GAP
            continue
        counts: dict[str, int] = {}
        for j in members:
            state = str(jobs[j].get("state"))
            counts[state] = counts.get(state, 0) + 1
            node_of[j] = group_id(n, state)
        states = state_order(counts)
        for i, state in enumerate(states):
            y = (i - (len(states) - 1) / 2) * GROUP_GAP
            nodes.append({"data": {"id": group_id(n, state), "label": f"{counts[state]} {state}", "state": state,
                                   "kind": "group", "layer": n, "count": counts[state],
                                   "size": min(70, 24 + 3 * counts[state] ** 0.5)},
                          "position": {"x": x, "y": y}})
        x += GROUP_COL
    links: dict[tuple[str, str], int] = {}
    for j in lay.order:
        for p in jobs[j].get("depends_on") or []:
            if p in node_of:
                key = (node_of[p], node_of[j])
                links[key] = links.get(key, 0) + 1
    return nodes + [edge(s, t, n) for (s, t), n in links.items()]


def stylesheet(colors: Mapping[str, str], unknown: str) -> list[dict[str, Any]]:
    """Cytoscape styles: a colour per state (``node[state = "X"]``), jobs as labelled rounded boxes,
    groups as discs sized by count, edges as light arrows (thicker when they stand for many)."""
    base: list[dict[str, Any]] = [
        {"selector": "node", "style": {
            "label": "data(label)", "background-color": unknown, "color": "#1f2937", "font-size": 11,
            "text-valign": "bottom", "text-margin-y": 4, "width": 22, "height": 22, "border-width": 0,
            "text-max-width": 170, "text-wrap": "ellipsis", "min-zoomed-font-size": 6}},
        {"selector": 'node[kind = "job"]', "style": {"shape": "round-rectangle", "width": 26, "height": 18}},
        {"selector": 'node[kind = "group"]', "style": {
            "shape": "ellipse", "width": "data(size)", "height": "data(size)", "font-weight": 600,
            "font-size": 13, "text-margin-y": 5}},
        {"selector": "node:selected", "style": {"border-width": 3, "border-color": "#111827"}},
        {"selector": "edge", "style": {
            "curve-style": "bezier", "target-arrow-shape": "triangle", "arrow-scale": 0.7, "width": 1.2,
            "line-color": "#c4cad4", "target-arrow-color": "#c4cad4"}},
        {"selector": "edge[count > 5]", "style": {"width": 3}},
    ]
    for state, c in colors.items():
        base.append({"selector": f'node[state = "{state}"]', "style": {"background-color": c}})
    base.append({"selector": 'node[state = "RUNNING"]', "style": {"border-width": 3, "border-color": "#9ec1f5"}})
    return base
