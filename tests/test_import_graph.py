"""The package's import graph: no import circles in vela_search/, no private name taken from another module.

The graph is read from the source with ``ast`` (nothing is imported). Every import statement counts as an
edge, wherever it stands: at module level, inside a function (a lazy import) or under ``TYPE_CHECKING``,
because each of them is a dependency a reader has to follow. ``from pkg import name`` is an edge to the
module ``pkg.name`` when there is one, else to ``pkg`` (its ``__init__``); a package is not an edge of its
own submodules. Imports made by ``importlib`` at run time are not read.

A private name is one with a leading underscore (dunders such as ``__version__`` are not); taking one from
another module of the package, by ``from m import _x`` or as ``m._x`` on an imported module, is refused:
a piece two modules share gets a public name and a home.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vela_search"


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a package is its ``__init__``)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, str | None]]:
    """``(target module, name)`` for each import of a package module in ``module``'s source.

    ``name`` is the name taken from the target by ``from target import name``, else None.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    root = module.partition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.partition(".")[0] == root:
                    yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source.partition(".")[0] != root:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                yield (submodule, None) if submodule in modules else (source, alias.name)


def private_attributes(path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, str]]:
    """``(module, name)`` for each ``alias._name`` where ``alias`` is bound to a package module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules and alias.asname:
                    bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            if is_private(node.attr):
                yield bound[node.value.id], node.attr


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def import_graph(package: Path) -> tuple[dict[str, set[str]], list[str]]:
    """The package's import graph (module -> modules it imports) and its cross-module private imports."""
    modules = module_files(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    private = []
    for module, path in modules.items():
        for target, name in imported_names(module, path, modules):
            if target != module:
                graph[module].add(target)
            if name is not None and is_private(name) and target != module:
                private.append(f"{module} imports {name} from {target}")
        for target, name in private_attributes(path, modules):
            if target != module:
                private.append(f"{module} uses {target}.{name}")
    return graph, private


def import_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph (its modules in import order, the first repeated at the end), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))
    return None


def test_the_package_has_no_import_circle():
    graph, _ = import_graph(PACKAGE)
    assert len(graph) > 100  # the whole package was read
    circle = import_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_no_module_takes_a_private_name_from_another():
    _, private = import_graph(PACKAGE)
    assert private == [], "\n".join(private)


# ----------------------------------------------------------------------- the checks find what they look for


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A small package to plant faults in: ``pkg.a`` imports ``pkg.b``; ``pkg.sub`` is a subpackage."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text('"""A package."""\n__version__ = "1"\n')
    (root / "sub" / "__init__.py").write_text("")
    (root / "a.py").write_text("from pkg.b import VALUE\nfrom pkg import __version__\n")
    (root / "b.py").write_text("VALUE = 1\n_HIDDEN = 2\n")
    (root / "sub" / "c.py").write_text("def f():\n    from ..b import VALUE\n    return VALUE\n")
    return root


def test_a_clean_package_passes(package):
    graph, private = import_graph(package)
    assert graph["pkg.a"] == {"pkg.b", "pkg"} and graph["pkg.sub.c"] == {"pkg.b"}
    assert import_circle(graph) is None and private == []


@pytest.mark.parametrize(
    "back",
    [
        "from pkg.a import *\n",  # module level
        "def g():\n    from pkg import a\n",  # a lazy import of a module, through its package
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub.c import f\n",  # via sub.c
    ],
)
def test_a_circle_is_found_wherever_the_import_stands(package, back):
    (package / "b.py").write_text(back)
    (package / "sub" / "c.py").write_text("from pkg.a import VALUE\n")
    circle = import_circle(import_graph(package)[0])
    assert circle is not None and circle[0] == circle[-1] and "pkg.b" in circle


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from pkg.b import _HIDDEN\n", "pkg.a imports _HIDDEN from pkg.b"),
        ("def f():\n    from .b import _HIDDEN\n", "pkg.a imports _HIDDEN from pkg.b"),
        ("import pkg.b as b\nX = b._HIDDEN\n", "pkg.a uses pkg.b._HIDDEN"),
        ("from pkg import b\nX = b._HIDDEN\n", "pkg.a uses pkg.b._HIDDEN"),
    ],
)
def test_a_private_name_from_another_module_is_found(package, source, found):
    (package / "a.py").write_text(source)
    assert import_graph(package)[1] == [found]
