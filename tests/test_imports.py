"""No import cycles in xmr/, imports inside functions included.

The graph is built from the source with ``ast`` (nothing is imported), the way
``structure.py`` (the project's structure report) builds it:

* every ``import`` / ``from ... import`` anywhere in a module counts, at the top,
  inside functions and methods, under ``try`` or any ``if``: a lazy import only
  hides a cycle, it does not remove it;
* except those under ``if TYPE_CHECKING:`` (its body only, not an ``else``): they
  never run, and exist to name types;
* relative imports are resolved against the importing module's package;
* ``from xmr.encoders import clip`` is an edge to the module ``xmr.encoders.clip``
  where that module exists, else (``from xmr.encoders import load_encoder``) to
  the package ``xmr.encoders``, i.e. its ``__init__``;
* ``import a.b.c`` is an edge to the deepest of ``a.b.c``, ``a.b``, ``a`` that is
  a module of the package; imports of other packages are not edges;
* importing a submodule is not also an edge to its parent packages (Python runs
  their ``__init__`` first, but counting that would put every module in a cycle
  with any ``__init__`` that imports a submodule).

A cycle is a strongly connected component of more than one module (Tarjan).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import xmr

ROOT = Path(xmr.__file__).resolve().parent.parent


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``root/package`` (a package is its __init__)."""
    out = {}
    for f in sorted((root / package).rglob("*.py")):
        parts = f.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` bodies (also ``typing.TYPE_CHECKING``)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    return skip


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, mods: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base_parts = module.split(".") if is_package else module.split(".")[:-1]
        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (see the module doc for the rules)."""
    mods = module_files(root, package)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        tree = ast.parse(f.read_text(encoding="utf-8"), str(f))
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for t in _targets(node, m, f.name == "__init__.py", mods):
                while t and t not in mods:  # import a.b.c of a module a.b: the edge is to a.b
                    t = t.rpartition(".")[0]
                if t and t != m and (t == package or t.startswith(package + ".")):
                    edges[m].add(t)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
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
            visit(v)
    return sorted(found)


def _describe(edges: dict[str, set[str]], found: list[list[str]]) -> str:
    lines = []
    for comp in found:
        lines.append(" <-> ".join(comp))
        for m in comp:
            lines.append(f"    {m} -> {', '.join(sorted(t for t in edges[m] if t in comp))}")
    return "\n".join(lines)


def test_xmr_has_no_import_cycles() -> None:
    edges = import_graph(ROOT, "xmr")
    assert "xmr.cli" in edges and "xmr.encoders.clip" in edges  # the tree was found
    found = cycles(edges)
    assert not found, "import cycles in xmr/ (imports inside functions count):\n" + _describe(edges, found)


# ------------------------------------------------------------ the checker itself, on small packages


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        f = tmp_path / "pkg" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text, encoding="utf-8")
    return tmp_path


def test_an_import_inside_a_function_closes_a_cycle(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "def f():\n    from pkg.b import g\n    return g\n",
            "b.py": "import pkg.a\n\ndef g():\n    return 1\n",
            "c.py": "from pkg import a\n",
        },
    )
    edges = import_graph(root, "pkg")
    assert edges["pkg.a"] == {"pkg.b"} and edges["pkg.b"] == {"pkg.a"} and edges["pkg.c"] == {"pkg.a"}
    assert cycles(edges) == [["pkg.a", "pkg.b"]]


def test_a_longer_cycle_is_one_component(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg import b\n",
            "b.py": "from pkg.sub import c\n",
            "sub/__init__.py": "",
            "sub/c.py": "from .. import a\n",
            "d.py": "from pkg import a\n",  # reaches the cycle but is not in it
        },
    )
    assert cycles(import_graph(root, "pkg")) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_type_checking_imports_do_not_count_but_their_else_does(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "a.py": "import pkg.b\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import X\n",
    }
    assert cycles(import_graph(_package(tmp_path, files), "pkg")) == []
    files["b.py"] += "else:\n    from pkg import a\n"
    assert cycles(import_graph(_package(tmp_path, files), "pkg")) == [["pkg.a", "pkg.b"]]


def test_relative_imports_resolve_to_modules(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "from . import a\n",
            "a.py": "from .b import thing\nfrom .sub import c\n",
            "b.py": "thing = 1\n",
            "sub/__init__.py": "from .c import y\n",
            "sub/c.py": "from ..b import thing as y\nimport json\n",
        },
    )
    edges = import_graph(root, "pkg")
    assert edges == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b", "pkg.sub.c"},
        "pkg.b": set(),
        "pkg.sub": {"pkg.sub.c"},
        "pkg.sub.c": {"pkg.b"},
    }
    assert cycles(edges) == []


@pytest.mark.parametrize(
    ("sibling_import", "cyclic"),
    [
        ("from pkg import helper\n", True),  # a name of the package: its __init__, which imports a
        ("from pkg import b\n", False),  # a sibling module, not the __init__
        ("import pkg.b\n", False),
    ],
)
def test_a_package_init_importing_its_submodule(tmp_path: Path, sibling_import: str, cyclic: bool) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "from pkg.a import run\n\ndef helper():\n    return 1\n",
            "a.py": sibling_import + "def run():\n    return 2\n",
            "b.py": "",
        },
    )
    assert cycles(import_graph(root, "pkg")) == ([["pkg", "pkg.a"]] if cyclic else [])
