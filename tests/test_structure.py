"""The shape of the code base: no import cycles, no private names across modules, a core that
imports without streamlit or plotly.

The import graph is read from the source (``ast``), every ``import`` counted, also those
inside functions: a lazy import still ties two modules together.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gaia_viz"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """``[(imported module, [names taken from it]), ...]`` for project modules only."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.append((alias.name, []))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            if target in modules:
                found.append((target, [n for n in names if f"{target}.{n}" not in modules]))
            found.extend((sub, []) for sub in submodules)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: {target for target, _ in imports_of(path, modules) if target != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_project_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "gaia_viz.forward" in graph["gaia_viz.sweep.job"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_module_imports_another_modules_private_names():
    modules = project_modules()
    offenders = []
    scripts = [*modules.values(), *(ROOT / "pages").glob("*.py"), ROOT / "app.py",
               *(ROOT / "benchmarks").glob("*.py")]
    for path in scripts:
        for target, names in imports_of(path, modules):
            offenders += [f"{path.relative_to(ROOT)} imports {target}.{n}" for n in names
                          if n.startswith("_") and not n.startswith("__")]
        source = path.read_text()
        for target in modules:
            alias = target.rpartition(".")[2]
            # attribute access of a private name through an imported module: ``sweep._x``
            for line in source.splitlines():
                stripped = line.strip()
                if stripped.startswith("#"):
                    continue
                marker = f"{alias}._"
                index = stripped.find(marker)
                while index >= 0:
                    before = stripped[index - 1] if index else " "
                    after = stripped[index + len(marker):index + len(marker) + 1]
                    if not (before.isalnum() or before in "_.") and after != "_":
                        offenders.append(f"{path.relative_to(ROOT)}: {stripped}")
                    index = stripped.find(marker, index + 1)
    assert not sorted(set(offenders)), "\n".join(sorted(set(offenders)))


def test_core_imports_without_streamlit_or_plotly():
    code = (
        "import sys\n"
        "import gaia_viz.gaia, gaia_viz.models, gaia_viz.data, gaia_viz.detectors, gaia_viz.metrics, "
        "gaia_viz.sweep, gaia_viz.threshold, gaia_viz.cli, gaia_viz.report\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('streamlit', 'plotly'))\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
