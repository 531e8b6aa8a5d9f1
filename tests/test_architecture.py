"""The package's shape: imports form a tree, stages know nothing of the command line, modules stay short.

The import graph is read statically (``ast``) from every module of ``l2g/``: ``import`` statements at
module level and inside functions, ``importlib.import_module("l2g....")`` calls with a literal name, and
string constants that name an l2g module (``"l2g.models.resnet38"`` or ``"l2g.models.resnet38:ResNet38"``),
which is how registries point at what they build lazily. A strongly connected component of more than one
module is a cycle: the test names it with its edges.

The packages stand in layers, lowest first (``LAYERS``); a module imports its own package and the
packages of its layer or below, never one above (the test names each upward edge):

    ground floor         l2g.errors (the user-facing errors), l2g.atomic (file writes), l2g.faults, l2g.compat,
                         and every package's torch-free name table, l2g.<package>.registry
    config               typed configuration, validated against the registries
    data, models, optim  datasets and files on disk; networks; optimisers and lr schedules
    engine               the training loop, checkpoints, runs, distributed helpers
    method               the training methods (L2G and its baselines) and their losses, targets and maps
    evaluation, segmentation
                         metrics and threshold sweeps; segmentation networks, CRF, inference
    report               documents, plots and run reports
    stages               what one command does, end to end
    api, l2g             the Python API (``import l2g``)
    cli                  the command line (``l2g ...``, ``python -m l2g``)

A registry is read from anywhere (it counts as the ground floor for its importers) and builds from its
own package or below (its own imports count at its package's layer).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "l2g"
MODULE_NAME = re.compile(r"^l2g(\.[a-z_][a-z0-9_]*)+(:[A-Za-z_][A-Za-z0-9_]*)?$")

# Packages of the library proper: none of them may know about the command line.
LIBRARY_PACKAGES = ("l2g.stages", "l2g.method", "l2g.models", "l2g.data", "l2g.engine", "l2g.evaluation",
                    "l2g.segmentation", "l2g.report", "l2g.config", "l2g.compat", "l2g.api")
COMMAND_LINE_MODULES = ("argparse", "l2g.cli")

LAYERS: tuple[tuple[str, ...], ...] = (
    ("l2g.errors", "l2g.atomic", "l2g.faults", "l2g.compat"),
    ("l2g.config",),
    ("l2g.data", "l2g.models", "l2g.optim"),
    ("l2g.engine",),
    ("l2g.method",),
    ("l2g.evaluation", "l2g.segmentation"),
    ("l2g.report",),
    ("l2g.stages",),
    ("l2g.api", "l2g"),
    ("l2g.cli", "l2g.__main__"),
)

MAX_LINES = 400
# Modules allowed above MAX_LINES, each with its reason (none today).
LONG_MODULES: dict[str, str] = {}


def module_files(package: Path) -> dict[str, Path]:
    """{dotted module name: file} of every module under ``package`` (a package is named by its folder)."""
    files = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ``modules`` that ``name`` (a module or a name inside one) refers to, if any."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every dotted name ``tree`` imports, anywhere in it (module level, functions, string registries)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join([*parts[:keep], *([base] if base else [])])
            names.update(f"{base}.{alias.name}" for alias in node.names)  # a module, or a name in ``base``
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_NAME.match(node.value):
            names.add(node.value.partition(":")[0])  # import_module("l2g.x") or a registry's "l2g.x:attr"
    return names


def import_graph(package: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """({module: the l2g modules it imports}, {module: every top-level or dotted name it imports})."""
    modules = module_files(package)
    graph, external = {}, {}
    for module, path in modules.items():
        names = imported_names(ast.parse(path.read_text(), str(path)), module, path.name == "__init__.py")
        external[module] = names
        graph[module] = {t for t in (_resolve(n, modules) for n in names) if t is not None and t != module}
    return graph, external


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def describe_cycles(graph: dict[str, set[str]], components: list[list[str]]) -> str:
    lines = []
    for component in components:
        lines.append("cycle: " + ", ".join(component))
        members = set(component)
        lines += [f"    {a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return "\n".join(lines)


def package_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> str | None:
    """The entry of ``layers`` that ``module`` belongs to (the longest that contains it), if any."""
    found = [p for layer in layers for p in layer if module == p or (p != "l2g" and module.startswith(f"{p}."))]
    return max(found, key=len) if found else None


def layer_of(module: str, importing: bool, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int:
    """The layer of ``module`` as an importer (``importing``) or as what is imported: a registry is on
    the ground floor for those who import it, at its package's layer for what it imports."""
    if not importing and module.rpartition(".")[2] == "registry":
        return 0
    package = package_of(module, layers)
    return next(i for i, layer in enumerate(layers) if package in layer)


def upward_imports(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """``a -> b`` for every import of ``graph`` from a package to one in a higher layer."""
    return [f"{a} -> {b} (layer {layer_of(a, True, layers)} imports layer {layer_of(b, False, layers)})"
            for a in sorted(graph) for b in sorted(graph[a])
            if package_of(a, layers) != package_of(b, layers)
            and layer_of(a, True, layers) < layer_of(b, False, layers)]


def _inside(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


# --- the checker itself, on a made-up package ---------------------------------------------------------


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "l2g"


def test_the_graph_sees_function_level_string_and_registry_imports(tmp_path):
    package = _write_package(tmp_path, {
        "l2g/__init__.py": "",
        "l2g/a.py": "def f():\n    from l2g import b\n",
        "l2g/b.py": "import importlib\nimportlib.import_module('l2g.c')\n",
        "l2g/c.py": "BUILDERS = {'x': 'l2g.d:Builder'}\n",
        "l2g/d.py": "from .a import f\n",
        "l2g/e.py": "import argparse\nfrom l2g.a import f\n",
    })
    graph, external = import_graph(package)
    assert graph["l2g.a"] == {"l2g.b"} and graph["l2g.b"] == {"l2g.c"} and graph["l2g.c"] == {"l2g.d"}
    assert graph["l2g.d"] == {"l2g.a"} and "argparse" in external["l2g.e"]
    assert cycles(graph) == [["l2g.a", "l2g.b", "l2g.c", "l2g.d"]]
    assert "l2g.d -> l2g.a" in describe_cycles(graph, cycles(graph))
    graph["l2g.d"] = set()
    assert cycles(graph) == []


def test_the_layer_check_names_an_upward_import(tmp_path):
    package = _write_package(tmp_path, {
        "l2g/__init__.py": "",
        "l2g/low/__init__.py": "",
        "l2g/low/registry.py": "def build():\n    from l2g.low import impl\n",
        "l2g/low/impl.py": "from l2g.high import use\n",
        "l2g/high/__init__.py": "",
        "l2g/high/use.py": "from l2g.low.registry import build\nfrom l2g.low import impl\n",
    })
    layers = (("l2g.low",), ("l2g.high", "l2g"))
    graph, _ = import_graph(package)
    assert upward_imports(graph, layers) == ["l2g.low.impl -> l2g.high.use (layer 0 imports layer 1)"]
    graph["l2g.low.impl"] = set()
    assert upward_imports(graph, layers) == []


# --- the package --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph_and_names():
    return import_graph(PACKAGE)


def test_imports_form_a_tree(graph_and_names):
    graph, _ = graph_and_names
    assert len(graph) > 50  # the package was found
    found = cycles(graph)
    assert not found, "import cycles in l2g:\n" + describe_cycles(graph, found)


def test_every_module_has_a_layer(graph_and_names):
    graph, _ = graph_and_names
    assert not [m for m in graph if package_of(m) is None], "modules outside LAYERS"
    assert all(package_of(p) == p for layer in LAYERS for p in layer if p != "l2g")


def test_imports_run_down_the_layers(graph_and_names):
    graph, _ = graph_and_names
    found = upward_imports(graph)
    assert not found, "imports from a lower package to a higher one (see LAYERS):\n    " + "\n    ".join(found)


def test_the_name_tables_and_the_config_import_no_torch_numpy_or_pil():
    """The registries are torch-free so that validating a config imports none of what does the work."""
    light = sorted(m for m in module_files(PACKAGE) if m.endswith(".registry")) + ["l2g.errors", "l2g.config"]
    code = (f"import importlib, sys; [importlib.import_module(m) for m in {light!r}]; "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]"], f"{light} import {result.stdout.strip()}"


def test_the_library_knows_nothing_of_the_command_line(graph_and_names):
    _, names = graph_and_names
    offenders = {module: sorted(n for n in imported if _inside(n, COMMAND_LINE_MODULES))
                 for module, imported in names.items() if _inside(module, LIBRARY_PACKAGES)}
    offenders = {module: found for module, found in offenders.items() if found}
    assert not offenders, f"library modules that import argparse or l2g.cli: {offenders}"


def test_modules_stay_short():
    too_long = {}
    for module, path in module_files(PACKAGE).items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and module not in LONG_MODULES:
            too_long[module] = lines
    assert not too_long, f"modules over {MAX_LINES} lines (split them at their seams): {too_long}"
    assert set(LONG_MODULES) <= set(module_files(PACKAGE)), "LONG_MODULES names a module that is gone"


def test_every_command_module_is_registered_one_way():
    """Each l2g/cli/*_commands.py module is one of the CLI's command groups, and its commands are Command
    records (the one registration mechanism), each leaf with a handler."""
    from l2g.cli import COMMAND_GROUPS
    from l2g.cli.options import Command

    def leaves(commands):
        for command in commands:
            assert isinstance(command, Command)
            yield from leaves(command.subcommands) if command.subcommands else [command]

    handlers = [c.run for _, commands in COMMAND_GROUPS for c in leaves(commands)]
    assert all(callable(run) for run in handlers)
    modules = {path.stem for path in (PACKAGE / "cli").glob("*_commands.py")}
    assert {run.__module__.rsplit(".", 1)[1] for run in handlers} == modules
