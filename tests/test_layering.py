"""The house rule of plugin_core/__init__.py, enforced: every import of the three code
folders (top-level, under TYPE_CHECKING, inside functions) goes down the tiers of rooms,
adapters and backends see only the plugin contracts and data rooms of the core, and no
module imports itself back through a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "plugin_core": "neurolabel.plugin_core",
    "adapters": "neurolabel.adapters",
    "backends": "neurolabel.backends",
}
CORE = "neurolabel.plugin_core"
#: Rooms of the core, lowest tier first; a room imports only lower tiers and itself.
TIERS = {
    "errors": 0,
    "_moved": 0,
    "data": 1,
    "runtime": 1,
    "plugins": 2,
    "pipeline": 3,
    "evaluation": 4,
    "reporting": 4,
    "cli": 5,
}
#: What the built-in plugins may import of the core.
PLUGIN_SIDE = {"errors", "data", "runtime", "plugins"}


def source_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three code folders."""
    modules = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if parts[0] == "_neurolabel":  # the top-level `neurolabel` facade
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def type_only_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (they never run)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return inside


def imports_of(
    name: str, path: Path, known: set[str], runtime_only: bool = False
) -> list[tuple[int, str]]:
    """``(line, module)`` for every neurolabel module ``name`` imports, wherever it does
    (with ``runtime_only``, not those under ``if TYPE_CHECKING:``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = type_only_nodes(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from pkg import mod` imports the module pkg.mod
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                for alias in node.names
            ]
        else:
            continue
        found.extend((node.lineno, t) for t in targets if t.split(".")[0] == "neurolabel")
    return found


def room(module: str) -> str | None:
    """The core room of a module (``data``, ``cli``...), or None outside the core."""
    if module == CORE:
        return "_moved"  # the package's __init__ only installs the alias finder
    if module.startswith(CORE + "."):
        return module[len(CORE) + 1 :].split(".")[0]
    return None


def breaches(root: Path = ROOT) -> list[str]:
    """Every import that breaks the rule, as ``file:line: what``."""
    modules = source_modules(root)
    known = set(modules)
    problems = []
    for name, path in modules.items():
        where = path.relative_to(root)
        for line, target in imports_of(name, path, known):
            here, there = room(name), room(target)
            if target == "neurolabel":
                problem = "imports the public facade `neurolabel` (import the defining module)"
            elif here is not None and there is None:
                problem = f"core module imports {target} (adapters and backends are plugins)"
            elif here is not None and there is not None and there != here:
                if there not in TIERS:
                    problem = f"imports {target}, in no room of the core"
                elif TIERS[there] >= TIERS[here]:
                    problem = f"room '{here}' imports {target} of room '{there}' (not lower)"
                else:
                    continue
            elif here is None and there is not None and there not in PLUGIN_SIDE:
                problem = f"plugin imports {target} of the core's '{there}' room"
            elif here is None and there is None and target.split(".")[1] != name.split(".")[1]:
                problem = f"imports {target}: adapters and backends meet through registries"
            else:
                continue
            problems.append(f"{where}:{line}: {problem}")
    return problems


def import_cycles(root: Path = ROOT, runtime_only: bool = False) -> list[list[str]]:
    """Cycles in the graph of module imports (lazy ones too; type-only ones unless
    ``runtime_only``)."""
    modules = source_modules(root)
    known = set(modules)
    graph = {
        name: sorted(
            {t for _, t in imports_of(name, path, known, runtime_only) if t in known and t != name}
        )
        for name, path in modules.items()
    }
    cycles, state, stack = [], dict.fromkeys(graph, 0), []

    def visit(node: str) -> None:
        state[node], _ = 1, stack.append(node)
        for nxt in graph[node]:
            if state[nxt] == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif state[nxt] == 0:
                visit(nxt)
        state[node], _ = 2, stack.pop()

    for node in graph:
        if state[node] == 0:
            visit(node)
    return cycles


def test_every_import_goes_down_the_tiers():
    problems = breaches()
    assert not problems, "Imports that break plugin_core/__init__.py's rule:\n" + "\n".join(
        problems
    )


#: The one recursion of types the domain has: an Evaluator contract receives the
#: ResolveContext, which holds the Registries, one of which registers Evaluators. The three
#: modules refer to each other only under TYPE_CHECKING (nothing runs in a circle).
TYPE_RECURSION = {
    f"{CORE}.plugins.contracts",
    f"{CORE}.plugins.context",
    f"{CORE}.plugins.registry",
}


def test_no_import_cycle():
    cycles = import_cycles(runtime_only=True)
    assert not cycles, "Import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_type_only_references_loop_only_through_the_contracts():
    cycles = [c for c in import_cycles() if not set(c) <= TYPE_RECURSION]
    assert not cycles, "Type-only import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_core_room_has_a_tier():
    rooms = {p.name for p in (ROOT / "plugin_core").iterdir() if (p / "__init__.py").is_file()}
    rooms |= {p.stem for p in (ROOT / "plugin_core").glob("*.py") if p.stem != "__init__"}
    assert rooms - {"_neurolabel"} == set(TIERS)


@pytest.mark.parametrize(
    ("file", "line", "expected"),
    [
        ("plugin_core/data/result.py", "from ..pipeline import labeler", "room 'data' imports"),
        ("plugin_core/data/result.py", "from ..runtime import memory", "room 'data' imports"),
        ("plugin_core/pipeline/labeler.py", "import neurolabel.backends.vocabularies", "core"),
        ("adapters/hook_extractor.py", "from neurolabel.plugin_core import pipeline", "plugin"),
        ("backends/color_scorer.py", "from neurolabel.adapters import model_sources", "meet"),
        ("backends/color_scorer.py", "from neurolabel import hookimpl", "facade"),
    ],
)
def test_a_wrong_import_is_caught_wherever_it_hides(tmp_path, file, line, expected):
    # A copy of the tree with one wrong import, hidden inside a function body.
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            copy = tmp_path / path.relative_to(ROOT)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    target = tmp_path / file
    text = target.read_text(encoding="utf-8")
    target.write_text(text + f"\n\ndef _sneaky() -> None:\n    {line}  # noqa\n", "utf-8")
    found = [p for p in breaches(tmp_path) if p.startswith(file)]
    assert len(found) == 1 and expected in found[0], found
