"""The package's shape, read from its source with `ast` (nothing is imported):

- the module-level imports between delphi's modules form no cycle;
- no `try: import delphi... except ImportError` (or a broader handler): our own modules are
  always there, and a guard would hide a broken import as a missing feature;
- the layers point one way: the fit is numpy-level maths that knows nothing of training, sweeps,
  reports, evaluation or models; recipes and run configs sit below the fit, training, sweeps and
  reports;
- no function is longer than a screen without a stated reason.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "delphi"

# What each layer must never import (module-level or inside a function): a prefix on the left
# imports nothing that starts with a prefix on the right.
FORBIDDEN = {
    "delphi.fit": ("delphi.train", "delphi.sweep", "delphi.report", "delphi.eval", "delphi.model"),
    "delphi.recipe": ("delphi.fit", "delphi.train", "delphi.sweep", "delphi.report"),
    "delphi.config": ("delphi.fit", "delphi.train", "delphi.sweep", "delphi.report"),
}

MAX_FUNCTION_LINES = 90
# Functions longer than MAX_FUNCTION_LINES, each with why it stays one function.
# Functions allowed over MAX_FUNCTION_LINES, each with the reason it stays whole (none today).
LONG_FUNCTIONS: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported delphi module
    line: int
    module_level: bool  # runs when `source` is imported (not inside a function, not TYPE_CHECKING)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The delphi module an imported dotted name lives in (a name imported from a module is that
    module), or None outside delphi."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(node: ast.ImportFrom, source: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(node: ast.Import | ast.ImportFrom, source: str, is_package: bool, known: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        mod = _absolute(node, source, is_package)
        # `from delphi.fit import plots` imports the module delphi.fit.plots; `from delphi.fit.isoflop
        # import fit_isoflop` a name of delphi.fit.isoflop.
        names = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
    ancestors = {source.rsplit(".", k)[0] for k in range(1, source.count(".") + 1)}
    out = set()
    for n in names:
        if n == "delphi" or n.startswith("delphi."):
            target = _resolve(n, known)
            out.add(target)
            # Importing a.b.c runs the packages a and a.b first; the packages `source` is in have
            # run already (they are not an import of `source`'s own, unless it names them).
            parent = target.rpartition(".")[0]
            while parent:
                if parent in known and parent not in ancestors:
                    out.add(parent)
                parent = parent.rpartition(".")[0]
    out.discard("delphi")  # the root package imports nothing (tested below): it cannot close a cycle
    out.discard(source)
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(source: str, path: Path, known: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend(Import(source, t, child.lineno, module_level)
                             for t in sorted(_targets(child, source, is_package, known)))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                visit(child, False)
            else:
                visit(child, module_level)

    visit(tree, True)
    return found


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    known = modules()
    return [imp for name, path in known.items() for imp in imports_of(name, path, known)]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def test_the_reader_sees_the_package(graph):
    """Guards the checks below against reading nothing: the graph has the edges we know of."""
    edges = {(i.source, i.target) for i in graph}
    assert ("delphi.report.fitview", "delphi.fit.record") in edges
    assert ("delphi.sweep.suite", "delphi.sweep.executors") in edges
    assert any(not i.module_level for i in graph)  # the CLI's lazy imports


def test_the_root_package_imports_nothing_of_ours():
    """`import delphi` stays instant, and the root cannot take part in a cycle."""
    known = modules()
    assert imports_of("delphi", known["delphi"], known) == []


def test_no_cycles_among_module_level_imports(graph):
    edges: dict[str, set[str]] = {}
    for i in graph:
        if i.module_level:
            edges.setdefault(i.source, set()).add(i.target)
    cycles = _cycles(edges)
    assert not cycles, "import cycles (module-level): " + "; ".join(" ↔ ".join(c) for c in cycles)


def test_no_import_guards_on_our_own_modules():
    """No import of a delphi module inside a `try` whose handlers would catch its ImportError
    (ImportError, ModuleNotFoundError, Exception, BaseException or a bare except)."""
    known = modules()
    guarded = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Try):
                continue
            catches = set()
            for h in node.handlers:
                types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
                catches |= {t.id for t in types if isinstance(t, ast.Name)}
            if not catches & {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"} and \
                    not any(h.type is None for h in node.handlers):
                continue
            for stmt in node.body:
                for sub in ast.walk(stmt):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)) and \
                            _targets(sub, name, path.name == "__init__.py", known):
                        guarded.append(f"{name}:{sub.lineno}")
    assert not guarded, f"imports of delphi's own modules inside try/except ImportError: {guarded}"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_point_one_way(graph, layer):
    def within(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    bad = [f"{i.source}:{i.line} imports {i.target}" for i in graph
           if within(i.source, layer) and any(within(i.target, f) for f in FORBIDDEN[layer])]
    assert not bad, f"{layer} reaches across layers: " + "; ".join(bad)


def _functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from _functions(node, name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def long_functions() -> dict[str, int]:
    """`module:qualified name` -> lines, for every function over MAX_FUNCTION_LINES (its whole
    extent: signature, docstring and body)."""
    out = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for qual, node in _functions(tree):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                out[f"{name}:{qual}"] = n
    return out


def test_no_function_is_longer_than_a_screen_without_a_reason():
    found = long_functions()
    unexplained = {k: v for k, v in found.items() if k not in LONG_FUNCTIONS}
    assert not unexplained, (f"functions over {MAX_FUNCTION_LINES} lines: {unexplained}; split them, or add each "
                             "to LONG_FUNCTIONS with the reason it stays whole")
    stale = sorted(set(LONG_FUNCTIONS) - set(found))
    assert not stale, f"LONG_FUNCTIONS lists functions that are no longer long (or no longer exist): {stale}"
