"""The shape of the code base: no import cycles, imports between the packages that only point
down the layers (:data:`LAYERS`), no private names across modules, a core that imports without
streamlit or plotly.

The import graph is read from the source (``ast``), every ``import`` counted, also those
inside functions: a lazy import still ties two modules together.
"""

import ast
import subprocess
import sys
from pathlib import Path

from support import ROOT
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


# The layers of gaia_viz, lowest first: a module may import from its own unit (a top-level
# module, or a package with its submodules) and from the units of lower layers, never from
# its own layer or above. "gaia_viz" is the package's root (its version). The core ends with
# the CLI; figures and the app sit above it.
LAYERS = (
    ("gaia_viz", "errors", "layer_defaults", "progress"),  # leaves
    ("settings", "model_output", "model_state", "allocator", "metrics", "embedding", "notes", "cache",
     "run_config", "outputs", "loader", "distributed"),  # small utilities on the errors only
    ("paths",),  # what may be read (the settings' roots)
    ("data",),  # presets, image files, sources (a scheme registry the demo registers into)
    ("demo",),  # the demo's sets and CNN (registers demo: into data)
    ("models",),  # the model catalogue (loads the demo CNN)
    ("gaia",),  # GAIA's hooked forward and scores (reads a model's head)
    ("forward", "integrations"),  # the shared forward pass; pytorch-ood and Captum adapters
    ("detectors",),  # every method, from the shared forward's outputs
    ("sweep", "threshold", "attribution"),  # one evaluation; a threshold file; Inspect's attributions
    ("report",),  # the real-data report (runs sweeps)
    ("cli",),  # the command line
    ("__main__",),  # python -m gaia_viz
    ("figures",),  # plotly figures (above the core)
    ("app",),  # the Streamlit explorer
)


def unit_of(module: str) -> str:
    """The layered unit of a module: ``gaia_viz.sweep.job`` -> ``sweep``, ``gaia_viz`` -> ``gaia_viz``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_violations(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every import that does not point down ``layers``: to the importer's own layer (another
    unit) or above it; and every unit that no layer names."""
    layer_of = {unit: number for number, names in enumerate(layers) for unit in names}
    found = [f"{unit_of(m)} is in no layer" for m in sorted(graph) if unit_of(m) not in layer_of]
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            here, there = unit_of(module), unit_of(target)
            if here == there or here not in layer_of or there not in layer_of:
                continue
            if layer_of[there] >= layer_of[here]:
                found.append(f"{module} imports {target}: {there} is not below {here}")
    return sorted(set(found))


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_project_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "gaia_viz.forward" in graph["gaia_viz.sweep.job"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_layer_check_finds_a_back_edge_and_an_unplaced_unit():
    layers = (("errors",), ("data",), ("demo",))
    down = {"gaia_viz.demo.datasets": {"gaia_viz.data.sources", "gaia_viz.errors"}, "gaia_viz.data.sources": set()}
    assert layer_violations(down, layers) == []
    back = {**down, "gaia_viz.data.sources": {"gaia_viz.demo"}}
    assert layer_violations(back, layers) == ["gaia_viz.data.sources imports gaia_viz.demo: demo is not below data"]
    sideways = {"gaia_viz.data.x": {"gaia_viz.demo"}}
    assert layer_violations(sideways, (("errors",), ("data", "demo"))) == [
        "gaia_viz.data.x imports gaia_viz.demo: demo is not below data"]
    assert layer_violations({"gaia_viz.new.thing": set()}, layers) == ["new is in no layer"]


def test_imports_between_packages_only_point_down_the_layers():
    graph = import_graph()
    assert "gaia_viz.data.sources" in graph["gaia_viz.demo.datasets"]  # the graph holds real edges
    violations = layer_violations(graph)
    assert not violations, "\n".join(violations)


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
