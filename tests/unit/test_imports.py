"""The import graph: no cycles, and each layer imports only what it may (see docs/DECISIONS.md)."""

from __future__ import annotations

import ast
from pathlib import Path

from titan_zmq.jobspec import find_cycle

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("titan_zmq", "client", "ui", "benchmarks")
# What the client library may import from the engine's processes: only the store's own client.
ENGINE_INTERNALS = ("titan_zmq.broker", "titan_zmq.worker", "titan_zmq.store")
CLIENT_MAY_IMPORT = ("titan_zmq.store.client",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")) if (REPO / package).is_dir() else []:
            out[module_name(path)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module ``name`` imports, anywhere in the file (also lazily or for typing only)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` depends on pkg.mod; `from pkg import name` on pkg itself
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from pkg import name`: a module, or a name in pkg
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def test_the_import_graph_has_no_cycle() -> None:
    g = graph()
    assert len(g) > 30, f"found only {len(g)} modules: is the walk looking in the right place?"
    cycle = find_cycle({name: sorted(deps) for name, deps in g.items()})
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_the_client_uses_only_the_public_engine() -> None:
    bad = {(name, dep) for name, deps in graph().items() if name.startswith("client")
           for dep in deps if dep.startswith(ENGINE_INTERNALS) and dep not in CLIENT_MAY_IMPORT}
    assert not bad, f"client modules importing engine internals: {sorted(bad)}"


def test_the_engine_does_not_import_its_users() -> None:
    bad = {(name, dep) for name, deps in graph().items() if name.startswith("titan_zmq")
           for dep in deps if dep.startswith(("client", "ui", "benchmarks"))}
    assert not bad, f"titan_zmq modules importing the layers above it: {sorted(bad)}"


def test_the_walk_sees_a_cycle_and_a_forbidden_import(tmp_path: Path) -> None:
    """The checks above can fail: the same walk over a tiny tree with a cycle and a bad import."""
    global REPO
    saved = REPO
    (tmp_path / "client").mkdir()
    (tmp_path / "titan_zmq" / "broker").mkdir(parents=True)
    (tmp_path / "titan_zmq" / "__init__.py").write_text("")
    (tmp_path / "titan_zmq" / "broker" / "__init__.py").write_text("")
    (tmp_path / "titan_zmq" / "broker" / "a.py").write_text("from titan_zmq.broker import b\n")
    (tmp_path / "titan_zmq" / "broker" / "b.py").write_text("from . import a\n")
    (tmp_path / "client" / "__init__.py").write_text("from titan_zmq.broker.a import thing\n")
    try:
        REPO = tmp_path
        g = graph()
    finally:
        REPO = saved
    assert find_cycle({n: sorted(d) for n, d in g.items()}) is not None
    assert "titan_zmq.broker.a" in g["client"]


def test_the_ui_talks_to_the_broker_through_the_client_only() -> None:
    """The UI is a client like any other: the client library, the event topics, no process internals."""
    bad = {(name, dep) for name, deps in graph().items() if name.startswith("ui")
           for dep in deps if dep.startswith(ENGINE_INTERNALS)}
    assert not bad, f"ui modules importing engine internals: {sorted(bad)}"
