"""pybridge's layers import downwards only, and no modules import each other in a cycle.

Every import counts, at module level and inside functions alike: a function-level
import runs as soon as the function does, so it ties the modules together just as
much (it only moves the cost out of start-up). Imports under ``if TYPE_CHECKING:``
do not count: they never run, and exist only for annotations.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pybridge"

# Bottom first. A module belongs to the first layer with a prefix that matches
# it (a prefix is a module or a package); it may import its own layer and the
# layers below. The README's Layout section tells the same story.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("pybridge", "pybridge.errors", "pybridge.libraries", "pybridge.settings",
              "pybridge.dtypes", "pybridge.codecs", "pybridge.codec_checks")),
    ("wire", ("pybridge.rpc.framing", "pybridge.rpc.protocol", "pybridge.rpc.params")),
    ("handoff", ("pybridge.handoff",)),
    ("call", ("pybridge.rpc.call",)),
    ("pool", ("pybridge.pool",)),
    ("zarr", ("pybridge.zarr",)),
    ("context", ("pybridge.context",)),
    ("methods", ("pybridge.methods",)),
    ("server", ("pybridge.rpc.server", "pybridge.rpc")),
    ("entry", ("pybridge.cli", "pybridge.__main__")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def _resolve(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The pybridge modules one import statement loads (its packages' __init__ aside)."""
    targets: set[str] = set()
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".")
            if not MODULES[module].name == "__init__.py":
                package.pop()
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                 for alias in node.names]
    for name in names:
        if name in MODULES and name != "pybridge":
            targets.add(name)
    return targets


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        for node in _runtime_imports(tree):
            edges |= _resolve(module, node)
        edges.discard(module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    # methods.array imports zarr.read only inside its handler.
    assert "pybridge.zarr.read" in graph["pybridge.methods.array"]
    # The `from pybridge.pool import codec_tasks as tasks` form is resolved.
    assert "pybridge.pool.codec_tasks" in graph["pybridge.methods.codec"]


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_go_downwards_only():
    upward = []
    for module, targets in import_graph().items():
        for target in sorted(targets):
            if layer_of(target) > layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports "
                              f"{target} ({LAYERS[layer_of(target)][0]})")
    assert upward == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_says_what_it_is(module):
    tree = ast.parse(MODULES[module].read_text())
    assert ast.get_docstring(tree), f"{module} has no module docstring"


def test_the_worker_preload_names_modules_that_exist():
    # The fork server imports these before it forks; the Elixir launcher checks
    # the same list (ZarrBridge.Sidecar.Launcher.worker_modules/0).
    from pybridge.pool.pool import PRELOAD

    ours = [m for m in PRELOAD if m.startswith("pybridge")]
    assert ours and all(m in MODULES for m in ours), ours
