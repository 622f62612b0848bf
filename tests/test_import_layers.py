"""The floors of ``python/igdbeam`` hold: the library never imports the application, the module
import graph has no cycles, and every import points down (or sideways inside one subpackage).

Read from the source with :mod:`ast`, so every import counts: module level, inside functions
(lazy), under ``if TYPE_CHECKING:`` (type-only), relative ones, and the facade's lazy names (a
string constant that names an igdbeam module, as in ``igdbeam/__init__.py``'s ``_LAZY_NAMES``).
A lazy or type-only import is still a dependency: the code cannot run, or be type-checked,
without the module it names.

Not counted: the implicit import of a module's parent packages (``import igdbeam.io.fs`` runs
``igdbeam/__init__.py``), which every module has and which says nothing about its own design; and
the facade's attribute access to subpackages by computed name.

The floors, lowest first (``docs/architecture.md`` draws them); a module may import its own
subpackage and anything on a lower floor, never a sibling on its own floor nor anything above.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "python"

# Lowest first. Each entry names top-level units of the package: a subpackage
# ("igdbeam.trie" covers igdbeam.trie.*) or a module. Units on one floor are siblings.
FLOORS: tuple[tuple[str, frozenset[str]], ...] = (
    ("version", frozenset({"igdbeam._version"})),
    ("base", frozenset({"igdbeam.errors", "igdbeam.io", "igdbeam.precision"})),
    ("extension", frozenset({"igdbeam._C"})),  # the compiled module (igdbeam/_C.pyi)
    ("native", frozenset({"igdbeam.native"})),
    ("trie", frozenset({"igdbeam.trie"})),
    ("ops", frozenset({"igdbeam.ops"})),
    ("library", frozenset({"igdbeam.data", "igdbeam.training", "igdbeam.decoding"})),
    # Siblings above the library: the evaluation, and IGD beam search driven by a vLLM engine.
    ("evaluation", frozenset({"igdbeam.evaluation", "igdbeam.vllm"})),
    ("serving", frozenset({"igdbeam.serving"})),  # the HTTP service over either engine
    ("app", frozenset({"igdbeam.app"})),
    ("facade", frozenset({"igdbeam"})),
)


def module_files(package_dir: Path, package: str = "igdbeam") -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` (and a ``.pyi``-only native module)."""
    found: dict[str, Path] = {}
    for path in sorted((package_dir / package).rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if path.suffix == ".py" or name not in found:
            found[name] = path
    return found


def _imported_names(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Dotted names one import statement can bind (``from a import b`` -> ``a.b`` and ``a``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def import_graph(package_dir: Path, package: str = "igdbeam") -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` counting every import in the file."""
    files = module_files(package_dir, package)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.stem == "__init__"
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = _imported_names(module, is_package, node)
                if isinstance(node, ast.ImportFrom):
                    # `from a import b`: b is a submodule (edge to a.b) or a name of a (edge to a)
                    subs = [n for n in names[:-1] if n in files]
                    names = subs if len(subs) == len(names) - 1 else [*subs, names[-1]]
                for name in names:
                    while name not in files and "." in name:
                        name = name.rsplit(".", 1)[0]
                    if name in files:
                        targets.add(name)
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in files
                and node.value.startswith(f"{package}.")
            ):
                targets.add(node.value)  # a lazy import by name (importlib)
        targets.discard(module)
        graph[module] = targets
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt) and nxt in graph:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def unit_of(module: str, floors: tuple[tuple[str, frozenset[str]], ...] = FLOORS) -> str | None:
    """The longest floor unit that is ``module`` or a package above it. A unit without a dot
    (the root package, the facade) covers only its own ``__init__``."""
    best = None
    for _, units in floors:
        for unit in units:
            inside = "." in unit and module.startswith(unit + ".")
            if (module == unit or inside) and (best is None or len(unit) > len(best)):
                best = unit
    return best


def floor_of(unit: str, floors: tuple[tuple[str, frozenset[str]], ...] = FLOORS) -> int:
    return next(i for i, (_, units) in enumerate(floors) if unit in units)


def floor_violations(
    graph: Mapping[str, Iterable[str]], floors: tuple[tuple[str, frozenset[str]], ...] = FLOORS
) -> list[str]:
    """Every import that points up a floor or to a sibling on the same floor (modules without a
    floor are left to :func:`test_every_module_has_a_floor`)."""
    bad = []
    for module in sorted(graph):
        unit = unit_of(module, floors)
        for target in sorted(graph[module]):
            tunit = unit_of(target, floors)
            if unit is None or tunit is None or tunit == unit:
                continue
            mine, theirs = floor_of(unit, floors), floor_of(tunit, floors)
            if theirs >= mine:
                where = "up" if theirs > mine else "sideways"
                bad.append(
                    f"{module} ({floors[mine][0]}) imports {target} ({floors[theirs][0]}): {where}"
                )
    return bad


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE_DIR)


def test_the_graph_sees_the_known_imports(graph: dict[str, set[str]]) -> None:
    """The parser finds top-level, function-local, type-only and by-name imports of the package."""
    assert "igdbeam.io.fs" in graph["igdbeam.io.atomic_files"]  # module level
    assert "igdbeam.trie.item_trie" in graph["igdbeam.ops.label_weights"]  # TYPE_CHECKING
    assert "igdbeam._version" in graph["igdbeam.io.markers"]  # function-local
    assert "igdbeam._C" in graph["igdbeam.native.library"]  # the native module (_C.pyi)
    assert "igdbeam.training.trainer" in graph["igdbeam"]  # the facade's lazy names
    assert "igdbeam.io" in graph["igdbeam.data.bigrec_csv"]


def test_library_does_not_import_the_app(graph: dict[str, set[str]]) -> None:
    """Nothing outside ``igdbeam/app/`` imports ``igdbeam.app`` (lazily or not)."""
    offenders = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if not (module == "igdbeam.app" or module.startswith("igdbeam.app."))
        for target in targets
        if target == "igdbeam.app" or target.startswith("igdbeam.app.")
    )
    assert offenders == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert find_cycle(graph) is None


def test_every_module_has_a_floor(graph: dict[str, set[str]]) -> None:
    """A new top-level module or subpackage must be given a floor here (and in the docs)."""
    assert sorted(m for m in graph if unit_of(m) is None) == []


def test_imports_point_down(graph: dict[str, set[str]]) -> None:
    assert floor_violations(graph) == []


def test_version_matches_pyproject() -> None:
    """``igdbeam._version`` (the floor-0 home of ``__version__``) is the packaged version."""
    from igdbeam import _version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert _version.__version__ == project["version"]


def _write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_checks_catch_a_bad_tree(tmp_path: Path) -> None:
    """The three checks fail on a small package with a lazy cycle, a type-only upward import,
    a relative import, a by-name import and a sibling import."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": 'LAZY = {"x": "pkg.top.cli"}\n',
            "pkg/low/__init__.py": "",
            "pkg/low/a.py": "def f():\n    from pkg.low import b\n",
            "pkg/low/b.py": "from . import a\n",
            "pkg/mid/__init__.py": "",
            "pkg/mid/m.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from pkg.top.cli import X\n"
            ),
            "pkg/side/__init__.py": "",
            "pkg/side/s.py": "from ..mid.m import f\n",
            "pkg/top/__init__.py": "",
            "pkg/top/cli.py": "import pkg.low.a\n",
        },
    )
    g = import_graph(tmp_path, "pkg")
    assert g["pkg.low.a"] == {"pkg.low.b"}
    assert g["pkg.low.b"] == {"pkg.low.a"}
    assert g["pkg.mid.m"] == {"pkg.top.cli"}
    assert g["pkg.side.s"] == {"pkg.mid.m"}
    assert g["pkg"] == {"pkg.top.cli"}
    assert find_cycle(g) == ["pkg.low.a", "pkg.low.b", "pkg.low.a"]
    floors = (
        ("low", frozenset({"pkg.low"})),
        ("mid", frozenset({"pkg.mid", "pkg.side"})),
        ("top", frozenset({"pkg.top"})),
        ("facade", frozenset({"pkg"})),
    )
    assert floor_violations(g, floors) == [
        "pkg.mid.m (mid) imports pkg.top.cli (top): up",
        "pkg.side.s (mid) imports pkg.mid.m (mid): sideways",
    ]
    assert unit_of("pkg.other.x", floors) is None  # an unlisted subpackage has no floor
    assert unit_of("pkg", floors) == "pkg"
    del g["pkg.low.b"]  # with the cycle's other half gone, no cycle is left
    assert find_cycle(g) is None
