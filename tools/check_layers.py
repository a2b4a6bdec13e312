"""The import rule of voxtrain's packages, checked: `python tools/check_layers.py [src/voxtrain]`.

Every top-level package or module of voxtrain sits in one layer. A unit may import units of
its own layer or of layers below it, never above, and no two units may import each other
(directly or round a longer loop). Inside a package the same holds for its modules: no two
import each other, directly or round a longer loop. Every import counts: module level, inside
functions and under TYPE_CHECKING, since each is a dependency a reader has to follow; `from
pkg import sub` imports the submodule `sub`. The package root (`voxtrain/__init__.py`, the
public API and `__version__`) is exempt both ways.

Exit status 0 when the rule holds, 1 with one line per violation otherwise. `make lint` runs it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# Lowest first. A new top-level module must be placed here, or the check fails.
LAYERS: list[tuple[str, set[str]]] = [
    ("bottom", {"config", "errors", "metrics", "atomic", "precision", "malloc", "versions", "resources"}),
    ("domain", {"text", "audio", "model", "vocoder", "forecast", "adversarial"}),
    ("artifacts", {"artifacts"}),
    ("work", {"data", "train", "inference", "listening", "report", "demo_corpus", "export", "vocoder_training"}),
    ("operations", {"ops"}),
    ("interface", {"cli", "__main__"}),
]
# Pairs that the layers allow but the design does not: operations drive training through the
# CLI in a subprocess, so they stay usable (and importable) without the training loop.
FORBIDDEN = {("ops", "train")}

ROOT_PACKAGE = "voxtrain"


def layer_of(unit: str) -> int | None:
    return next((i for i, (_, units) in enumerate(LAYERS) if unit in units), None)


def _module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement reaches; `from m import x` gives `m.x`, which
    `_resolve` maps to the submodule `m.x` where there is one, else to `m`."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            parts = module.split(".")
            base = ".".join(parts[: len(parts) - node.level + (1 if is_package else 0)]
                            + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        return [f"{base}.{a.name}" for a in node.names]
    return []


def _resolve(name: str, modules: set[str]) -> str | None:
    """The module `name` reaches: itself, or the longest prefix that is a module of the tree."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _unit(module: str, package_dir: Path) -> str | None:
    parts = module.split(".")
    if parts[0] != ROOT_PACKAGE:
        return None
    if len(parts) == 1:
        return ""  # "" is the exempt package root
    # `from voxtrain import __version__` names an attribute of the root, not a unit.
    is_unit = (package_dir / parts[1]).is_dir() or (package_dir / f"{parts[1]}.py").is_file()
    return parts[1] if is_unit else ""


def _imports(package_dir: Path) -> list[tuple[str, str, str, int]]:
    """(importing module, imported name, file, line) for every import in the tree."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        module = _module_name(path, package_dir)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for name in _imported(node, module, path.name == "__init__.py"):
                found.append((module, name, str(path.relative_to(package_dir.parent)), node.lineno))
    return found


def import_edges(package_dir: Path) -> list[tuple[str, str, str, int]]:
    """(from unit, to unit, file, line) for every import between two different units."""
    edges = []
    for module, name, where, line in _imports(package_dir):
        src, dst = _unit(module, package_dir), _unit(name, package_dir)
        if dst is None or not src or not dst or dst == src:
            continue
        edges.append((src, dst, where, line))
    return edges


def module_edges(package_dir: Path) -> list[tuple[str, str, str, int]]:
    """(from module, to module, file, line) for every import between two modules of one unit."""
    modules = {_module_name(p, package_dir) for p in package_dir.rglob("*.py")}
    edges = []
    for module, name, where, line in _imports(package_dir):
        dst = _resolve(name, modules)
        unit = _unit(module, package_dir)
        if dst is None or dst == module or not unit or _unit(dst, package_dir) != unit:
            continue
        edges.append((module, dst, where, line))
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def violations(package_dir: Path) -> list[str]:
    problems = []
    graph: dict[str, set[str]] = {}
    for src, dst, where, line in import_edges(package_dir):
        graph.setdefault(src, set()).add(dst)
        for unit in (src, dst):
            if layer_of(unit) is None:
                problems.append(f"{where}:{line}: `{unit}` is in no layer: add it to LAYERS in tools/check_layers.py")
        ls, ld = layer_of(src), layer_of(dst)
        if ls is not None and ld is not None and ld > ls:
            problems.append(f"{where}:{line}: {src} ({LAYERS[ls][0]}) imports {dst} ({LAYERS[ld][0]}), "
                            f"a higher layer")
        if (src, dst) in FORBIDDEN:
            problems.append(f"{where}:{line}: {src} must not import {dst}")
    for cycle in _cycles(graph):
        problems.append(f"import cycle between {', '.join(cycle)}")
    problems += _module_cycles(package_dir)
    return sorted(set(problems), key=problems.index)


def _module_cycles(package_dir: Path) -> list[str]:
    graph: dict[str, set[str]] = {}
    first_import: dict[tuple[str, str], str] = {}
    for src, dst, where, line in module_edges(package_dir):
        graph.setdefault(src, set()).add(dst)
        first_import.setdefault((src, dst), f"{where}:{line}")
    problems = []
    for cycle in _cycles(graph):
        # Every import between two modules of the loop: the lines one of which must change.
        sites = [first_import[a, b] for a in cycle for b in cycle if (a, b) in first_import]
        short = [m.removeprefix(f"{ROOT_PACKAGE}.") for m in cycle]
        problems.append(f"import cycle between modules {', '.join(short)} ({', '.join(sites)})")
    return problems


def main(argv: list[str]) -> int:
    package_dir = Path(argv[1] if len(argv) > 1 else "src/voxtrain")
    problems = violations(package_dir)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} layering violation(s); the rule: docs/ARCHITECTURE.md", file=sys.stderr)
        return 1
    units = {u for _, units in LAYERS for u in units}
    print(f"layers ok: {len(units)} units in {len(LAYERS)} layers, imports only point down, no cycles "
          f"between units or between the modules of a package")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
