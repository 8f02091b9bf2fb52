"""The package's import graph has no cycles, and every module imports on its own.

A cycle counts wherever its imports sit: module level, inside a function (a "lazy" import
is still a circle in the layering, and the next refactor moves it to the top), or under
``if TYPE_CHECKING:``. What is not an edge: ``importlib.import_module`` of a dotted-path
string, which is how registries name a backend without importing it (``REWARD_BACKENDS``),
and the implicit import of a parent package (every ``__init__.py`` here is a docstring).

Run ``pytest tests/test_imports.py``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import paras2s_pl

PACKAGE_DIR = Path(paras2s_pl.__file__).parent


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name → source file, for every ``.py`` under ``package_dir``."""
    files = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def import_graph(package_dir: Path) -> dict[str, dict[str, int]]:
    """Module → {package module it imports: line of the first such import}."""
    files = module_files(package_dir)

    def owner(name: str) -> str | None:  # the deepest package module a dotted name lies in
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [owner(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: climb level - 1 packages from this one
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # ``from pkg import sub`` imports the module pkg.sub; ``from mod import f``, mod
                targets = [owner(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base)
                           for a in node.names]  # fmt: skip
            else:
                continue
            for target in targets:
                if target and target != module:
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                cycles.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    return sorted(cycles)


def describe(cycles: list[list[str]], graph: dict[str, dict[str, int]], root: Path) -> str:
    """Each cycle's imports as ``file:line imports module`` lines (what to move)."""
    files = module_files(root)
    lines = []
    for cycle in cycles:
        lines.append("cycle: " + " ↔ ".join(cycle))
        for a in cycle:
            rel = files[a].relative_to(root.parent)
            lines += [f"  {rel}:{n} imports {b}" for b, n in graph[a].items() if b in cycle]
    return "\n".join(lines)


def test_package_has_no_import_cycles():
    """Protocols and shared helpers get a module of their own; registries name by string."""
    graph = import_graph(PACKAGE_DIR)
    assert len(graph) > 50  # the walk found the package, not an empty folder
    cycles = import_cycles(graph)
    assert not cycles, "import cycles in paras2s_pl:\n" + describe(cycles, graph, PACKAGE_DIR)


def test_cycle_check_sees_lazy_and_relative_imports(tmp_path):
    """The check itself can fail: a ↔ b through a function-level relative import."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    sources = {
        "__init__.py": "",
        "a.py": "import pkg.b\n",
        "b.py": "def f():\n    from . import a\n",
        "c.py": "from pkg.a import thing\nfrom pkg.sub import d\n",
        "sub/__init__.py": "",
        "sub/d.py": "from ..b import f\n",
    }
    for name, text in sources.items():
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph["pkg.c"] == {"pkg.a": 1, "pkg.sub.d": 2}
    assert graph["pkg.sub.d"] == {"pkg.b": 1}
    cycles = import_cycles(graph)
    assert cycles == [["pkg.a", "pkg.b"]]
    assert "pkg/b.py:2 imports pkg.a" in describe(cycles, graph, pkg)
    (pkg / "b.py").write_text("def f():\n    pass\n")
    assert import_cycles(import_graph(pkg)) == []


def test_every_module_imports_on_its_own():
    """Each module imports with no other package module loaded before it.

    One interpreter (third-party imports stay cached, so this takes seconds, not the minutes
    of a ``python -c "import ..."`` per module) that forgets every ``paras2s_pl`` module
    before each import: a module that only works when a sibling was imported first fails.
    """
    names = sorted(module_files(PACKAGE_DIR))
    script = textwrap.dedent(
        """
        import importlib, sys, traceback
        failed = []
        for name in sys.argv[1:]:
            for key in [k for k in sys.modules if k.split(".")[0] == "paras2s_pl"]:
                del sys.modules[key]
            try:
                importlib.import_module(name)
            except BaseException:
                failed.append(name + ":\\n" + traceback.format_exc(limit=-3))
        print("\\n".join(failed))
        sys.exit(1 if failed else 0)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"modules that fail to import alone:\n{proc.stdout}{proc.stderr}"
