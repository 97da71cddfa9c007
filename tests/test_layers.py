"""The import rule of the package (`comdml_ray.LAYERS`), checked against the code as text.

Every import in `comdml_ray/` and `solvers/` (at module level, inside functions and under
TYPE_CHECKING alike) is read with `ast`, never executed:
- an import points to a unit of a lower floor, or stays inside its own unit;
- Ray, torch and torchvision are imported only by the units `THIRD_PARTY_ONLY_IN` names;
- no two modules import each other, directly or round a longer circle (imports under
  TYPE_CHECKING are left out of this one: they never run);
- every sub-package's docstring says what it owns and what it may import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

from comdml_ray import LAYERS, THIRD_PARTY_ONLY_IN

ROOT = Path(__file__).resolve().parents[1]
FLOOR = {unit: floor for floor, units in enumerate(LAYERS) for unit in units}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    files = [*ROOT.joinpath("comdml_ray").rglob("*.py"), *ROOT.joinpath("solvers").rglob("*.py")]
    return {_module_name(p): p for p in sorted(files)}


MODULES = _modules()


def _unit(module: str) -> str | None:
    """The LAYERS unit a module belongs to: the longest unit that is it or a package above it."""
    best = None
    for unit in FLOOR:
        if (module == unit or module.startswith(unit + ".")) and (best is None or len(unit) > len(best)):
            best = unit
    return best


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, under TYPE_CHECKING) for every import statement of a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.body:
                    visit_stmt(stmt, True)
                for stmt in child.orelse:
                    visit_stmt(stmt, typing_only)
                continue
            visit_stmt(child, typing_only)

    def visit_stmt(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno, typing_only) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:  # `from pkg import mod` imports the submodule when there is one
                sub = f"{base}.{a.name}"
                found.append((sub if sub in MODULES else base, node.lineno, typing_only))
        visit(node, typing_only)

    visit(tree, False)
    return found


EDGES = {m: _imports(m, p) for m, p in MODULES.items()}


def test_every_module_has_a_unit():
    """A new module or folder must be given its floor in LAYERS (the package root excepted)."""
    assert [m for m in MODULES if m != "comdml_ray" and _unit(m) is None] == []


def test_imports_point_down():
    wrong = []
    for m, imports in EDGES.items():
        src = _unit(m)
        if src is None:
            continue
        for target, line, _ in imports:
            dst = _unit(target)
            if dst is None or dst == src:
                continue
            if FLOOR[dst] >= FLOOR[src]:
                wrong.append(f"{MODULES[m].relative_to(ROOT)}:{line} imports {target} ({dst}, floor {FLOOR[dst]}) from floor {FLOOR[src]}")
    assert wrong == [], "imports that do not point down:\n" + "\n".join(wrong)


@pytest.mark.parametrize("library", sorted(THIRD_PARTY_ONLY_IN))
def test_heavy_libraries_stay_in_their_units(library):
    allowed = THIRD_PARTY_ONLY_IN[library]
    wrong = [
        f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}"
        for m, imports in EDGES.items()
        for target, line, _ in imports
        if target.split(".")[0] == library and _unit(m) not in allowed
    ]
    assert wrong == [], f"{library} may be imported only in {', '.join(allowed)}:\n" + "\n".join(wrong)


def test_no_module_cycles():
    g = nx.DiGraph()
    for m, imports in EDGES.items():
        for target, _, typing_only in imports:
            if not typing_only and target in MODULES and target != m and not m.startswith(target + "."):
                g.add_edge(m, target)
    assert list(nx.simple_cycles(g)) == []


def test_sub_packages_say_what_they_own_and_may_import():
    for m, p in MODULES.items():
        if p.name == "__init__.py" and m.count(".") == 1 and m.startswith("comdml_ray."):
            doc = ast.get_docstring(ast.parse(p.read_text())) or ""
            assert "Owns" in doc, f"{p.relative_to(ROOT)}: its docstring should say what it owns"
            assert "May import:" in doc, f"{p.relative_to(ROOT)}: its docstring should say what it may import"


def test_the_rule_catches_an_import_that_runs_up(tmp_path):
    """The checker itself: a module of `timing` importing `runtime` is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from comdml_ray.runtime.actors import AgentHost\nimport torch\n")
    imports = _imports("comdml_ray.timing.bad", bad)
    assert ("comdml_ray.runtime.actors", 1, False) in imports
    assert FLOOR[_unit("comdml_ray.runtime.actors")] > FLOOR[_unit("comdml_ray.timing.bad")]
    assert "comdml_ray.timing" not in THIRD_PARTY_ONLY_IN["torch"]
