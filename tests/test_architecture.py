"""The import rules of docs/architecture.md, read from the source with `ast`.

The graph has one node per module of engines/, serving/, exporters/ and harness/, and an edge
for every import of one of them, at module level or inside a function: an import inside a
function that closes a circle is still a circle. Importing `a.b.c` from outside `a.b` also runs
`a.b/__init__.py`, so that is an edge too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("core", "engines", "serving", "exporters", "workloads", "loadgen", "analysis", "harness")
# which rooms each room must never import (harness may import all of them); the rooms stack
# core < engines < serving, exporters, workloads < loadgen < analysis < harness
FORBIDDEN = {
    "core": ("engines", "serving", "exporters", "workloads", "loadgen", "analysis", "harness"),
    "engines": ("serving", "exporters", "workloads", "loadgen", "analysis", "harness"),
    "serving": ("exporters", "workloads", "loadgen", "analysis", "harness"),
    "exporters": ("serving", "workloads", "loadgen", "analysis", "harness"),
    "workloads": ("serving", "exporters", "loadgen", "analysis", "harness"),
    "loadgen": ("engines", "serving", "exporters", "analysis", "harness"),
    "analysis": ("loadgen", "serving", "workloads"),
}
#: the only harness modules analysis reads (rows, hardware profiles): never the runner,
#: scenarios, executors or the load generator
ANALYSIS_READS = {"harness", "harness.results", "harness.hardware"}
COMMANDS = {
    "harness.run",
    "harness.sweep",
    "harness.serve",
    "harness.tools",
    "harness.plan",
    "harness.report",
    "harness.export",
    "harness.compare",
    "harness.job",
}
#: module stems that may repeat: each package's own, and engines/ + exporters/ per runtime
SHARED_STEMS = {"__init__", "__main__", "base", "config", "api"}
RUNTIME_PAIRS = {"onnx", "openvino", "tensorrt", "neuron", "triton"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for room in ROOMS:
        if (ROOT / room).is_dir():
            for path in sorted((ROOT / room).rglob("*.py")):
                found[module_name(path)] = path
    return found


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """Project modules an import statement names (with `from X import sub` resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:  # relative: from the module's own package
        pkg = module.split(".") if is_package else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    out = [base]
    out += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules its imports run, anywhere in the file."""
    modules = project_modules()
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        if not is_package:
            own.discard(module)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, module, is_package, known):
                parts = target.split(".")
                # the target and every package on its way that is not already running
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    if name in known and name not in own and name != module:
                        graph[module].add(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None when the graph is a DAG."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def room(module: str) -> str:
    return module.split(".")[0]


def is_command(module: str) -> bool:
    return module in COMMANDS or module.endswith(".__main__")


def test_the_graph_sees_the_project():
    graph = import_graph()
    assert {"engines.base", "engines.models", "exporters.api", "harness.run", "core.errors"} <= set(
        graph
    )
    assert "engines.models" in graph["engines.base"]
    # a function-level import counts: the Triton exporter loads the ensemble's inner artifact
    assert "exporters.api" in graph["exporters.triton"]


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or ())


def test_rooms_import_one_way():
    bad = [
        f"{m} -> {t}"
        for m, targets in import_graph().items()
        for t in sorted(targets)
        if room(t) in FORBIDDEN.get(room(m), ())
    ]
    assert not bad, "imports against the room order: " + ", ".join(bad)


def test_analysis_reads_rows_only():
    bad = [
        f"{m} -> {t}"
        for m, targets in import_graph().items()
        if room(m) == "analysis"
        for t in sorted(targets)
        if room(t) == "harness" and t not in ANALYSIS_READS
    ]
    assert not bad, "analysis imports harness beyond rows and hardware: " + ", ".join(bad)


def _sources(*rooms: str):
    for module, path in project_modules().items():
        if room(module) in rooms:
            yield module, path, path.read_text()


def _imported_names(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_core_and_engines_parse_no_flags_and_start_no_command():
    """No argparse below the commands, and no process started by a command's module name
    (the harness hands core the command line)."""
    command_names = COMMANDS | {c.rsplit(".", 1)[0] for c in COMMANDS if c.endswith("__main__")}
    bad = []
    for module, _, source in _sources("core", "engines"):
        if "argparse" in _imported_names(source):
            bad.append(f"{module} imports argparse")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and node.value in command_names:
                bad.append(f"{module} names the command {node.value!r}")
    assert not bad, "; ".join(bad)


def test_only_the_process_room_starts_processes():
    bad = [
        module
        for module, _, source in _sources(*ROOMS)
        if "subprocess" in source and not module.startswith("core.processes")
    ]
    assert not bad, "subprocess outside core/processes: " + ", ".join(bad)


def test_the_environment_is_read_in_one_place():
    bad = [
        module
        for module, _, source in _sources(*ROOMS)
        if ("os.environ" in source or "getenv" in source) and module != "core.environment"
    ]
    assert not bad, "the environment read outside core.environment: " + ", ".join(bad)


def test_module_stems_are_unique():
    by_stem: dict[str, list[str]] = {}
    for module, path in project_modules().items():
        stem = path.stem
        if stem in SHARED_STEMS:
            continue
        if stem in RUNTIME_PAIRS and room(module) in ("engines", "exporters"):
            stem = f"{room(module)}:{stem}"
        by_stem.setdefault(stem, []).append(module)
    repeated = {s: ms for s, ms in by_stem.items() if len(ms) > 1}
    assert not repeated, f"module stems that repeat: {repeated}"


def test_no_room_holds_more_than_35_percent_of_the_lines():
    lines = {r: 0 for r in ROOMS}
    for module, _, source in _sources(*ROOMS):
        lines[room(module)] += source.count("\n")
    total = sum(lines.values())
    big = {r: f"{n / total:.0%}" for r, n in lines.items() if n > 0.35 * total}
    assert not big, f"rooms over 35% of the package lines: {big}"


def levels(graph: dict[str, set[str]], within: str) -> tuple[int, list[str]]:
    """The longest import chain inside one room, in modules (a room of leaves has 1 level)."""
    memo: dict[str, list[str]] = {}

    def chain(m: str) -> list[str]:
        if m not in memo:
            deps = [t for t in graph[m] if room(t) == within]
            memo[m] = [m] + max((chain(t) for t in deps), key=len, default=[])
        return memo[m]

    longest = max((chain(m) for m in graph if room(m) == within), key=len)
    return len(longest), longest


def test_harness_stays_flat():
    top = [p for p in (ROOT / "harness").iterdir() if p.name not in ("__init__.py", "__pycache__")]
    assert len(top) <= 20, f"harness/ has {len(top)} modules and packages at its top"
    depth, chain = levels(import_graph(), "harness")
    assert depth <= 5, f"harness/ imports {depth} levels deep: {' -> '.join(chain)}"


def test_levels_counts_the_longest_chain():
    graph = {"h.a": {"h.b", "c.x"}, "h.b": {"h.c"}, "h.c": set(), "c.x": set()}
    assert levels(graph, "h") == (3, ["h.a", "h.b", "h.c"])


def test_no_library_module_imports_a_command_module():
    bad = [
        f"{m} -> {t}"
        for m, targets in import_graph().items()
        for t in sorted(targets)
        if is_command(t) and not is_command(m)
    ]
    assert not bad, "library modules importing command modules: " + ", ".join(bad)


def test_find_cycle_reports_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def _names_the_engine(node: ast.AST) -> bool:
    """`x.engine`, `engine`, `row["engine"]` or `row.get("engine")`: an engine's name (not a
    device, format or server kind that happens to be spelled like one)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "engine"
    if isinstance(node, ast.Name):
        return node.id == "engine"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "engine"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        first = node.args[0] if node.args else None
        return (
            node.func.attr == "get" and isinstance(first, ast.Constant) and first.value == "engine"
        )
    return False


def engine_name_branches(source: str, names: set[str]) -> list[str]:
    """Comparisons (==, !=, in, not in, match cases) of an engine's name with a literal one."""
    found = []

    def strings(node: ast.AST) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return {s for e in node.elts for s in strings(e)}
        return set()

    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = (node.left, *node.comparators)
            if not any(_names_the_engine(x) for x in operands):
                continue
            hit = set().union(*(strings(x) for x in operands)) & names
        elif isinstance(node, ast.Match) and _names_the_engine(node.subject):
            values = [c.pattern for c in node.cases if isinstance(c.pattern, ast.MatchValue)]
            hit = set().union(set(), *(strings(v.value) for v in values)) & names
        else:
            continue
        found += [f"line {node.lineno}: {sorted(hit)}"] if hit else []
    return found


def test_harness_never_branches_on_an_engine_name():
    from engines.registry import ENGINES

    names = set(ENGINES)
    bad = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        for hit in engine_name_branches(path.read_text(), names):
            bad.append(f"{path.relative_to(ROOT)} {hit}")
    assert not bad, "harness/ branches on engine names (engines declare instead): " + "; ".join(bad)


def test_the_engine_name_check_sees_a_branch():
    names = {"triton", "eager"}
    assert engine_name_branches('if args.engine == "triton":\n    pass\n', names)
    assert engine_name_branches('x = row.get("engine") in ("eager", "x")\n', names)
    assert engine_name_branches('match cfg.engine:\n    case "eager":\n        pass\n', names)
    assert not engine_name_branches('protocol = "triton"\n', names)  # a value, not a branch
    # a server kind an engine declares, spelled like an engine: not a branch on its name
    assert not engine_name_branches('if cls.remote_server == "triton":\n    pass\n', names)
