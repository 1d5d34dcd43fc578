"""The kit's layers and its real import graph (read with `ast`, nothing is imported).

Layers, bottom to top; a module may import from its own layer or the ones below, never above:

    0 util/                                    foundation: errors, atomic, config, metrics, trainer ...
    1 evaluation/                              pure scorers: files or arrays in, scores out
    2 task1_match_mismatch/, task2_regression/, speaker_extraction/
                                               the three tasks (none imports another)
    3 synthetic/, benchmarks/, */experiments/, demo.py, submit.py, docs/   users of the tasks

Used by ``tests/test_layout.py`` (the rule stays true) and ``docs/make_import_graph.py`` (the picture
in docs/DESIGN.md).
"""
from __future__ import annotations

import ast
from pathlib import Path

LAYERS = {"util": 0, "evaluation": 1, "task1_match_mismatch": 2, "task2_regression": 2, "speaker_extraction": 2,
          "synthetic": 3, "benchmarks": 3, "demo": 3, "submit": 3, "docs": 3}
TOP_LAYER = 3
SKIPPED = ("tests", "results", "runs", ".git")


def group_of(module: str) -> str:
    """``task2_regression.experiments.paper_tables`` -> ``task2_regression.experiments``; else the top package."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "experiments":
        return ".".join(parts[:2])
    return parts[0]


def layer_of(module: str) -> int:
    group = group_of(module)
    return TOP_LAYER if group.endswith(".experiments") else LAYERS[group]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def kit_modules(root: str | Path) -> dict[str, Path]:
    """``{module name: path}`` of every kit module under ``root`` (tests and run folders left out)."""
    root = Path(root)
    modules = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] in SKIPPED or relative.parts[0].startswith("."):
            continue
        if relative.parts[0] in LAYERS or relative.stem in LAYERS:
            modules[module_name(root, path)] = path
    return modules


def imports_of(module: str, path: Path) -> list[tuple[str, int]]:
    """``[(imported kit module, line)]`` of one file, including imports inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [f"{prefix}.{alias.name}" for alias in node.names]  # a name, or a submodule
        else:
            continue
        for name in names:
            if name.split(".")[0] in LAYERS:
                found.append((name, node.lineno))
    return found


def import_graph(root: str | Path) -> dict[tuple[str, str], list[str]]:
    """``{(importing group, imported group): ["file:line", ...]}`` over the whole kit."""
    root = Path(root)
    modules = kit_modules(root)
    edges: dict[tuple[str, str], list[str]] = {}
    for module, path in modules.items():
        for name, line in imports_of(module, path):
            source, target = group_of(module), group_of(name)
            place = f"{path.relative_to(root)}:{line}"
            if source != target and place not in edges.setdefault((source, target), []):
                edges[(source, target)].append(place)
    return edges


def violations(root: str | Path) -> list[str]:
    """Imports that point up a layer, or from one task into another: ``"file:line a -> b"``."""
    out = []
    for (source, target), places in sorted(import_graph(root).items()):
        up = layer_of(target) > layer_of(source)
        sideways = layer_of(source) == layer_of(target) == 2 and source.split(".")[0] != target.split(".")[0]
        if up or sideways:
            out.extend(f"{place} {source} -> {target}" for place in places)
    return out


def module_cycles(root: str | Path) -> list[list[str]]:
    """Import cycles between kit modules (each as the list of modules on it); [] when there are none."""
    modules = kit_modules(root)
    graph = {module: sorted({name if name in modules else name.rpartition(".")[0]
                             for name, _ in imports_of(module, path)} & set(modules) - {module})
             for module, path in modules.items()}
    cycles, state = [], {}

    def visit(module, stack):
        state[module] = "open"
        for target in graph[module]:
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    return cycles
