"""Static checks of the library's shape: no import cycles, no oversized modules, a mirrored test tree.

Both are read from the source (ast), not by importing it, so they hold for every code path:
an import inside a function counts as much as one at the top, because a function-local import
that closes a cycle only hides it (the modules still depend on each other).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = SRC / "pathfuse"
TESTS = REPO / "tests"
MAX_LINES = 300
#: Modules allowed above MAX_LINES for now, with why. Aim: empty.
OVERSIZED: set[str] = set()
#: Import cycles tolerated, with why. There are none; keep it so.
KNOWN_CYCLES: set[frozenset[str]] = set()
#: Test folders that name no subpackage: the end-to-end Snakemake runs and checks of the workflow.
CROSS_CUTTING_TEST_FOLDERS = {"workflow"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The pathfuse modules a file imports anywhere (top level or inside functions).

    ``from pathfuse.x import y`` counts as an import of ``pathfuse.x.y`` when that is a module
    (a submodule), else of ``pathfuse.x``. A package's ``__init__`` is not added for a
    submodule import: Python runs it first, but it cannot close a cycle unless it imports back.
    """
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imported_modules(path, name, known) for name, path in mods.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, set(c)) for c in components]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, as a readable path."""
    start = min(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                todo.append(nxt)
    return sorted(component)


def test_the_import_graph_has_no_cycles():
    cycles = find_cycles(import_graph())
    new = [c for c in cycles if frozenset(c) not in KNOWN_CYCLES]
    assert not new, "import cycles:\n" + "\n".join(" -> ".join(c) for c in new)
    gone = KNOWN_CYCLES - {frozenset(c) for c in cycles}
    assert not gone, f"remove from KNOWN_CYCLES (no longer a cycle): {[sorted(c) for c in gone]}"


def test_the_cycle_finder_sees_a_cycle_through_a_function_local_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]


def test_every_module_is_at_most_300_lines():
    too_long = {name: n for name, path in modules().items()
                if (n := len(path.read_text().splitlines())) > MAX_LINES and name not in OVERSIZED}
    assert not too_long, f"modules over {MAX_LINES} lines (split them along their responsibilities): {too_long}"


def test_the_oversized_allow_list_names_only_existing_oversized_modules():
    mods = modules()
    stale = {m for m in OVERSIZED if m not in mods or len(mods[m].read_text().splitlines()) <= MAX_LINES}
    assert not stale, f"remove from OVERSIZED (gone or now short enough): {sorted(stale)}"


def misplaced_test_modules(tests: Path, package: Path) -> list[str]:
    """Test modules outside the mirror of ``package``: tests/<subpackage path>/test_*.py.

    Modules at the top of ``tests`` (tests of top-level modules, cross-cutting checks) and under
    a folder of CROSS_CUTTING_TEST_FOLDERS are in place; every other folder holding a test module
    must name an existing subpackage (support/ and fixture folders hold none).
    """
    misplaced = []
    for path in sorted(tests.rglob("test_*.py")):
        folder = path.parent.relative_to(tests)
        if not folder.parts or folder.parts[0] in CROSS_CUTTING_TEST_FOLDERS:
            continue
        if not (package / folder / "__init__.py").is_file():
            misplaced.append(str(path.relative_to(tests)))
    return misplaced


def test_the_test_tree_mirrors_the_package():
    misplaced = misplaced_test_modules(TESTS, PACKAGE)
    assert not misplaced, (f"test modules in folders that name no pathfuse subpackage (move them to "
                           f"tests/<subpackage>/, the top of tests/ or tests/workflow/): {misplaced}")


def test_the_mirror_check_sees_a_misplaced_test_module(tmp_path):
    (tmp_path / "src" / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "sub" / "__init__.py").touch()
    for test in ("test_top.py", "sub/test_sub.py", "workflow/test_e2e.py", "gone/test_old.py", "support/test_x.py"):
        (tmp_path / "tests" / test).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tests" / test).touch()
    assert misplaced_test_modules(tmp_path / "tests", tmp_path / "src" / "pkg") == ["gone/test_old.py",
                                                                                     "support/test_x.py"]
