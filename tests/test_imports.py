"""common/ has no knots: its import graph (every import, those inside functions included, read with `ast` without
running anything) has no cycle, no module imports another one's private (_underscore) names, and the models
(policy.py, groot.py) import no checkpoint format: formats import models, never the other way round. The checker
itself is shown to catch a cycle hidden in a function and a private import, on a synthetic package."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ROOT / "common"
MODELS = {"policy": set(), "groot": {"policy"}}   # model module -> the only common modules it may import


def imports(directory: Path) -> dict[str, list[tuple[str, str | None, int]]]:
    """module -> [(imported common module, imported name or None, line)] for every import statement in it."""
    package = directory.name
    modules = {f.stem for f in directory.glob("*.py")}
    out = {}
    for f in sorted(directory.glob("*.py")):
        found = []
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == package and len(parts) > 1 and parts[1] in modules:
                        found.append((parts[1], None, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                parts = ([package] if node.level else []) + (node.module.split(".") if node.module else [])
                if not parts or parts[0] != package:
                    continue
                if len(parts) > 1:                       # from common.x import y
                    found += [(parts[1], a.name, node.lineno) for a in node.names if parts[1] in modules]
                else:                                    # from common import x (a module, or a name of __init__)
                    found += [(a.name, None, node.lineno) if a.name in modules else ("__init__", a.name, node.lineno)
                              for a in node.names]
        out[f.stem] = found
    return out


def graph(directory: Path) -> dict[str, set[str]]:
    return {m: {dep for dep, _, _ in found if dep != m} for m, found in imports(directory).items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, colours white / grey / black)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "grey"
        stack.append(m)
        for dep in sorted(g.get(m, ())):
            if state.get(dep) == "grey":
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[m] = "black"
        return None

    for m in sorted(g):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def private_imports(directory: Path) -> list[str]:
    return [f"{m}.py:{line}: from common.{dep} import {name}" for m, found in imports(directory).items()
            for dep, name, line in found if name and name.startswith("_") and not name.startswith("__")]


def test_common_has_no_import_cycle():
    cycle = find_cycle(graph(COMMON))
    assert cycle is None, " -> ".join(cycle)


def test_no_common_module_imports_another_ones_private_names():
    assert private_imports(COMMON) == []


def test_models_import_no_checkpoint_format():
    g = graph(COMMON)
    for model, allowed in MODELS.items():
        assert g[model] <= allowed, f"common/{model}.py imports {sorted(g[model] - allowed)}"


def test_the_checker_catches_a_cycle_inside_a_function_and_a_private_import(tmp_path):
    pkg = tmp_path / "common"
    pkg.mkdir()
    (pkg / "a.py").write_text("import os\nfrom common.b import B\n")
    (pkg / "b.py").write_text("B = 1\n\ndef load():\n    from common import c\n    return c\n")
    (pkg / "c.py").write_text("def f():\n    import common.a\n    from common.b import _hidden\n")
    (pkg / "d.py").write_text("from common import b\nfrom . import c\n")
    assert graph(pkg) == {"a": {"b"}, "b": {"c"}, "c": {"a", "b"}, "d": {"b", "c"}}
    assert find_cycle(graph(pkg)) == ["a", "b", "c", "a"]
    assert private_imports(pkg) == ["c.py:3: from common.b import _hidden"]
    (pkg / "c.py").write_text("C = 1\n")
    assert find_cycle(graph(pkg)) is None and private_imports(pkg) == []
