"""The shape of the house, checked from the source: the import graph has no cycle, one module
talks to ONNX Runtime, and the dependencies point one way (README, "Layout").

The graph is built with :mod:`ast` from every ``import`` statement of the project's packages,
including those inside functions (a cycle that only shows at call time is still a cycle).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "training", "bench")
SESSION_MODULE = "service.runtime.session"


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (project modules resolved to the deepest module named)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                out.add(candidate if candidate in MODULES else module)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _project_edges() -> dict[str, set[str]]:
    return {name: {m for m in deps if m in MODULES and m != name} for name, deps in GRAPH.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _importers(prefix: str) -> dict[str, set[str]]:
    hits: dict[str, set[str]] = defaultdict(set)
    for name, deps in GRAPH.items():
        for dep in deps:
            if dep == prefix or dep.startswith(prefix + "."):
                hits[name].add(dep)
    return hits


def test_the_import_graph_has_no_cycle():
    assert len(MODULES) > 40, sorted(MODULES)  # the walk found the packages
    assert _cycles(_project_edges()) == []


def test_the_cycle_check_can_fail():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_only_the_session_module_imports_onnxruntime():
    assert set(_importers("onnxruntime")) == {SESSION_MODULE}


def test_the_service_never_imports_torch_or_training():
    service = {name: deps for name, deps in GRAPH.items() if name.split(".")[0] == "service"}
    bad = {name: sorted(d for d in deps if d.split(".")[0] in ("torch", "training"))
           for name, deps in service.items()}
    assert {name: deps for name, deps in bad.items() if deps} == {}


def test_dependencies_point_one_way():
    """contract <- runtime <- api; the contract is what training imports, so it needs neither
    the web framework nor ONNX Runtime."""
    layer = {"contract": 0, "runtime": 1, "api": 2}
    for name, deps in _project_edges().items():
        parts = name.split(".")
        if parts[0] != "service" or len(parts) < 3 or parts[1] not in layer:
            continue
        for dep in deps:
            d = dep.split(".")
            if d[0] == "service" and len(d) > 2 and d[1] in layer:
                assert layer[d[1]] <= layer[parts[1]], f"{name} imports {dep}"
            assert dep != "service.cli", f"{name} imports the command line"
        if parts[1] == "contract":
            web = sorted(d for d in GRAPH[name] if d.split(".")[0] in ("fastapi", "starlette", "uvicorn"))
            assert not web, f"{name} imports {web}"


def test_route_handlers_are_short():
    """A handler declares its parameters, calls the serving layer once and names its renderer;
    the plumbing lives in the request lifecycle (service/api/lifecycle.py)."""
    long = {}
    for path in sorted((REPO / "service" / "api").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            routed = any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
                         and d.func.attr in ("get", "post", "put", "delete", "patch") for d in node.decorator_list)
            body = node.body[1:] if (node.body and isinstance(node.body[0], ast.Expr)
                                     and isinstance(node.body[0].value, ast.Constant)) else node.body
            lines = (body[-1].end_lineno - body[0].lineno + 1) if body else 0
            if routed and lines > 15:
                long[f"{path.name}:{node.name}"] = lines
    assert long == {}
