"""Import hygiene: companions are leaves, the layers import downwards, no import cycles.

* The runtime (every package shipped in the wheel but the companions) never loads
  torch, the training companion (:mod:`slam.learn`), the synthetic renderer
  (:mod:`slam.synthetic`), the command line (:mod:`slam.cli`) or ``benchmarks``; the
  core (:mod:`slam` and the wire protocol) never loads ``server`` or ``clients``.
  Checked in fresh interpreters, on what an import really loads.
* No import cycle inside ``slam/``: the graph of module-level imports (read with
  :mod:`ast`; imports inside functions are lazy and allowed) has no strongly connected
  component of more than one module.
* ``server/`` and ``clients/`` never import the core's internals (map, tracking,
  mapping, loop closing), and ``clients/`` never imports ``server/`` (read from the
  source, lazy imports included).
"""

from __future__ import annotations

import ast
import fnmatch
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

COMPANIONS = ("slam.learn", "slam.synthetic", "slam.cli", "benchmarks")
"""Packages that import the runtime and that the runtime never imports."""
CORE_INTERNALS = ("slam.map", "slam.loop", "slam.mapping", "slam.tracking")
"""What the service and the clients reach only through the system's face."""
SERVICE_ROOTS = ("server", "clients")
FACES = ("slam.system", "slam.replay", "slam.place.factory", "slam.place.learned",
         "slam.features.learned", "slam.dense.worker", "server.service", "server.publisher",
         "clients.client")
"""Modules imported on their own besides every package: the entry points of the runtime."""
CLI_ENTRY_POINTS = ("slam.cli.main", "server.cli", "clients.cli")
"""Console scripts and the ``slam`` plugin: they may load ``slam.cli``, nothing heavier."""
SUBPROCESS_TIMEOUT_S = 300  # a cold import with Numba compiling is seconds; this is a hang

_PROBE = r"""
import importlib, json, sys
names, forbidden = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def bad(loaded, rules):
    return sorted(m for m in loaded for f in rules if m == f or m.startswith(f + "."))
found = {}
for name in names:
    before = set(sys.modules)
    importlib.import_module(name)
    new = bad(set(sys.modules) - before, forbidden[name])
    if new:
        found[name] = new
print(json.dumps(found))
"""


def _in(module: str, packages: tuple[str, ...] | list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def shipped_roots() -> list[str]:
    """Top-level packages of the wheel: folders with ``__init__.py`` that match
    pyproject's ``packages.find`` include patterns (slam, server, clients, ...)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(p.name for p in ROOT.iterdir()
                  if (p / "__init__.py").is_file()
                  and any(fnmatch.fnmatch(p.name, pat) for pat in patterns))


def module_files(root: str) -> Iterator[tuple[str, Path]]:
    """(dotted name, file) of every module of the top-level package ``root``."""
    for path in sorted((ROOT / root).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def runtime_modules() -> list[str]:
    """Every shipped module that is not a companion (nor a console script)."""
    return [name for root in shipped_roots() for name, _ in module_files(root)
            if not _in(name, COMPANIONS) and name.rpartition(".")[2] != "cli"]


def runtime_packages() -> list[str]:
    """Every shipped package (folder with ``__init__.py``) that is not a companion."""
    return [name for root in shipped_roots() for name, path in module_files(root)
            if path.name == "__init__.py" and not _in(name, COMPANIONS)]


def forbidden_for(module: str) -> list[str]:
    """What importing ``module`` must not load."""
    out = ["torch", "slam.learn", "slam.synthetic", "benchmarks"]
    if module not in CLI_ENTRY_POINTS:
        out.append("slam.cli")
    if not _in(module, SERVICE_ROOTS):
        out += SERVICE_ROOTS
    return out


def probe(names: list[str]) -> dict[str, list[str]]:
    """Import ``names`` in order in one fresh interpreter; for each, the forbidden modules
    its import loaded (only names that loaded some)."""
    rules = {n: forbidden_for(n) for n in names}
    res = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(names), json.dumps(rules)],
                         cwd=ROOT, capture_output=True, text=True,
                         timeout=SUBPROCESS_TIMEOUT_S, check=False)
    assert res.returncode == 0, f"importing {names} failed:\n{res.stderr[-3000:]}"
    found: dict[str, list[str]] = json.loads(res.stdout.strip().splitlines()[-1])
    return found


def _targets() -> list[str]:
    present = [m for m in (*FACES, *CLI_ENTRY_POINTS)
               if (ROOT / (m.replace(".", "/") + ".py")).is_file()]
    return sorted(set(runtime_packages()) | set(present))


@pytest.mark.parametrize("module", _targets())
def test_runtime_import_loads_no_companion(module: str) -> None:
    """Each runtime package and entry point, alone in a fresh interpreter."""
    found = probe([module])
    assert not found, (f"importing {module} loads {found[module]}; "
                       f"forbidden: {forbidden_for(module)}")


@pytest.mark.parametrize("root", shipped_roots())
def test_every_runtime_module_loads_no_companion(root: str) -> None:
    """Every runtime module of ``root`` in turn, in one interpreter: a forbidden module
    is blamed on the first import that loads it (which imports it, or a module that does)."""
    names = [m for m in runtime_modules() if _in(m, [root])]
    assert names
    found = probe(names)
    assert not found, "\n".join(f"{m} loads {v}" for m, v in found.items())


def test_the_probe_sees_a_forbidden_import() -> None:
    """The check itself: importing a companion is reported."""
    found = probe(["slam.synthetic.scene"])
    assert {"slam.synthetic", "slam.synthetic.scene"} <= set(found["slam.synthetic.scene"])


# --- import cycles ------------------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at module level, at ``line`` of its file."""

    source: str
    target: str
    line: int


def _module_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements run when the module is imported: the module's body and its
    ``if``/``try``/``with`` blocks, not ``if TYPE_CHECKING:`` nor function or class bodies."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
            if name != "TYPE_CHECKING":
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse,
                          node.finalbody):
                yield from _module_level(block)
        elif isinstance(node, ast.With):
            yield from _module_level(node.body)


def import_graph(root: str) -> dict[str, list[Edge]]:
    """Module-level imports between the modules of package ``root``."""
    files = dict(module_files(root))

    def resolve(name: str) -> str | None:  # the module itself, else its deepest package
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, list[Edge]] = {}
    for module, path in files.items():
        is_pkg = path.name == "__init__.py"
        edges = []
        for node in _module_level(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")[: len(module.split(".")) - node.level + is_pkg]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [f"{base}.{a.name}" for a in node.names]
            for name in names:
                target = resolve(name)
                if target is not None and target != module:
                    edges.append(Edge(module, target, node.lineno))
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            e = next(it, None)
            if e is not None:
                w = e.target
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def a_cycle(graph: dict[str, list[Edge]], component: list[str]) -> list[Edge]:
    """One cycle through the first module of ``component`` (shortest, breadth first)."""
    members, start = set(component), component[0]
    came: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for e in graph[v]:
                if e.target == start:
                    path = [e]
                    while path[0].source != start:
                        path.insert(0, came[path[0].source])
                    return path
                if e.target in members and e.target not in came:
                    came[e.target] = e
                    nxt.append(e.target)
        frontier = nxt
    raise AssertionError(f"no cycle in {component}")


def describe(cycle: list[Edge]) -> str:
    return " -> ".join(f"{e.source} (line {e.line})" for e in cycle) + f" -> {cycle[0].source}"


def test_no_import_cycle_in_slam() -> None:
    graph = import_graph("slam")
    assert len(graph) > 50
    cycles = [describe(a_cycle(graph, c)) for c in strongly_connected(graph)]
    assert not cycles, "import cycles in slam/:\n" + "\n".join(cycles)


def test_cycle_finder_finds_and_reports_a_cycle() -> None:
    graph = {"a": [Edge("a", "b", 3)], "b": [Edge("b", "c", 4)],
             "c": [Edge("c", "a", 5), Edge("c", "d", 6)], "d": []}
    (comp,) = strongly_connected(graph)
    assert comp == ["a", "b", "c"]
    assert describe(a_cycle(graph, comp)) == "a (line 3) -> b (line 4) -> c (line 5) -> a"


def test_graph_reads_module_level_imports_only() -> None:
    graph = import_graph("slam")
    targets = {e.target for e in graph["slam.place.factory"]}
    assert {"slam.place.learned", "slam.place.recognizer", "slam.config"} <= targets
    # slam.cli.run imports the replay inside its command function: lazy, not an edge
    assert "slam.replay" not in {e.target for e in graph["slam.cli.run"]}


# --- what the service and the clients may import -------------------------------------------


def imports_in(root: str) -> Iterator[tuple[str, int, str]]:
    """(file, line, imported module) of every import under ``root``, lazy ones included."""
    for _, path in module_files(root):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for a in node.names:
                    yield str(path.relative_to(ROOT)), node.lineno, a.name
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                yield str(path.relative_to(ROOT)), node.lineno, node.module


@pytest.mark.parametrize(("root", "banned"), [("server", CORE_INTERNALS),
                                              ("clients", (*CORE_INTERNALS, "server"))],
                         ids=["server", "clients"])
def test_service_and_clients_use_the_face_not_the_internals(
        root: str, banned: tuple[str, ...]) -> None:
    """``server/`` talks to :mod:`slam.system`, not to the map, tracking, mapping or loop
    closing; ``clients/`` speaks the wire protocol and never imports ``server/``."""
    hits = [f"{f}:{n}: {m}" for f, n, m in imports_in(root) if _in(m, banned)]
    assert not hits, "\n".join(hits)
