"""The package's layers: each sub-package imports only from the layers below it, and no import cycles.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a lazy import that
reaches up is still a dependency on the layer above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "snrmoe_dask"
# Lowest first. A module may import from its own layer and the layers before it.
LAYERS = [("errors", "_version", "_preload"), ("core",), ("io",), ("engine",), ("experiment",), ("report",), ("cli",), ("",)]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the snrmoe_dask modules (or names inside them) that ``path`` imports."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "snrmoe_dask":
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "snrmoe_dask")
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {d for d in _imports(p) if d in modules and d != m} for m, p in modules.items()}


def _rank(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module}: not in any layer of {LAYERS}; add it to one")


def test_every_module_belongs_to_a_layer():
    for module in _graph():
        _rank(module)


def test_no_module_imports_from_a_layer_above():
    upward = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps
              if _rank(d) > _rank(m) and d != "snrmoe_dask"]
    assert not upward, "imports reaching up a layer:\n" + "\n".join(sorted(upward))


def test_only_the_package_facade_imports_the_package_root():
    # `from snrmoe_dask import x` inside the package would make every module depend on the facade
    offenders = [m for m, deps in _graph().items() if "snrmoe_dask" in deps and m != "snrmoe_dask"]
    assert not offenders


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(" -> ".join(path[path.index(v):] + [v]))
            elif v not in state:
                visit(v, path + [v])
        state[u] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("sub", ["core", "io", "engine", "experiment", "report"])
def test_each_sub_package_says_what_it_is(sub):
    import importlib

    doc = importlib.import_module(f"snrmoe_dask.{sub}").__doc__ or ""
    assert len(doc.split()) >= 20, f"snrmoe_dask.{sub} needs a one-paragraph docstring"
