"""How results are shown: one line per scenario as it ends, and the Markdown table for docs/BENCHMARKS.md."""

from __future__ import annotations

from typing import Any

TARGETS = {  # scenario -> (field, comparison, target, text)
    "startup": ("overhead_ms", "<=", 5.0, "≤ 5 ms over a clean venv's Python"),
    "single": ("overhead_ms", "<=", 5.0, "overhead ≤ 5 ms p50"),
    "single-true": ("overhead_ms", "<=", 5.0, "overhead ≤ 5 ms p50"),
    "throughput": ("ratio", ">=", 0.8, "≥ 0.8 × floor"),
    "chain": ("overhead_ms", "<=", 5.0, "≤ 5 ms per hop"),
    "fan": ("ratio", "<=", 1.25, "≤ 1.25 × floor"),
    "big-dag": ("ratio", "<=", 1.5, "≤ 1.5 × floor; peak RSS ≤ 250 MiB, < 10 KiB/job"),
    "store": ("value", ">=", 10_000, "≥ 10,000 ops/s everysec, ≥ 2,000 always"),
    "recovery": ("value", "<=", 3.0, "≤ 3 s for 100,000 transitions"),
    "restart-history": ("value", "<=", 5.0, "≤ 5 s to first dispatch with 100,000 finished runs kept"),
    "logs": ("value", "<=", 50.0, "p50 ≤ 50 ms, p99 ≤ 250 ms"),
    "ui-colour": ("value", "<=", 1000.0, "p50 ≤ 1 s"),
    "ui-first-render": ("value", "<=", 2.0, "≤ 2 s"),
    "ui-log": ("value", "<=", 1000.0, "p50 ≤ 1 s"),
}


def line(name: str, fields: dict[str, Any]) -> str:
    """One scenario's headline: value, floor, ratio and overhead (those it has)."""
    value, unit, floor = fields.get("value"), fields.get("unit"), fields.get("floor")
    extra = f"  floor {floor:.4g}" if isinstance(floor, (int, float)) else ""
    ratio = f"  ratio {fields['ratio']:.3f}" if isinstance(fields.get("ratio"), (int, float)) else ""
    over = f"  +{fields['overhead_ms']:.2f} ms" if isinstance(fields.get("overhead_ms"), (int, float)) else ""
    return f"{name:<12} {value:.4g} {unit}{extra}{ratio}{over}"


def markdown(doc: dict[str, Any]) -> str:
    """The results as a Markdown table (for docs/BENCHMARKS.md)."""
    rows = ["| scenario | titan | floor | ratio | overhead | details | target |", "|---|---|---|---|---|---|---|"]
    for name, r in doc["scenarios"].items():
        details = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
                            if k not in ("value", "unit", "floor", "ratio", "overhead_ms"))
        floor = f"{r['floor']:.4g}" if isinstance(r.get("floor"), (int, float)) else "—"
        ratio = f"{r['ratio']:.3f}" if isinstance(r.get("ratio"), (int, float)) else "—"
        over = f"{r['overhead_ms']:.2f} ms" if isinstance(r.get("overhead_ms"), (int, float)) else "—"
        target = TARGETS.get(name, ("", "", 0, ""))[3]
        rows.append(f"| {name} | {r['value']:.4g} {r['unit']} | {floor} | {ratio} | {over} | {details} | {target} |")
    return "\n".join(rows)
