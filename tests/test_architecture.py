"""The shape of the code: layered packages, imports that point one way, short functions, one name per thing.

The layers, bottom to top (CONTRIBUTING.md draws them). A module imports only from its own layer and
the layers below; every import counts, those inside functions too.
"""

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["core", "data", "synth", "models", "weights", "training", "evaluation", "inference", "report", "study"]
TOP = {"grefel", "grefel.api", "grefel.demo"}  # above every layer
MAX_TOP_MODULES = 6
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    mods = {}
    for top in ("grefel", "grefel_cli"):
        for p in (ROOT / top).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The module of ``MODULES`` that ``name`` (a dotted import target) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _parents(tree: ast.AST) -> dict:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _in_function(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return True
    return False


def _imports(module: str) -> list[tuple[str, ast.AST]]:
    """(imported grefel module, import node) of every import in ``module``, inside functions too."""
    tree = ast.parse(MODULES[module].read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            ]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            owner = _owner(t) if t.split(".")[0] in ("grefel", "grefel_cli") else None
            if owner and owner != module:
                out.append((owner, node))
    return out


def _layer(module: str) -> int:
    if module in TOP:
        return len(LAYERS)
    return LAYERS.index(module.split(".")[1])


def test_every_package_has_a_layer():
    packages = {m.split(".")[1] for m in MODULES if m.startswith("grefel.") and m not in TOP}
    assert packages <= set(LAYERS), f"give these packages a layer: {sorted(packages - set(LAYERS))}"


def test_imports_point_down_the_layers():
    upward = [
        f"{m} ({LAYERS[_layer(m)] if m not in TOP else 'top'}) imports {t}"
        for m in MODULES
        if m.startswith("grefel") and not m.startswith("grefel_cli")
        for t, _ in _imports(m)
        if not t.startswith("grefel_cli") and _layer(t) > _layer(m)
    ]
    assert upward == []


def test_the_library_never_imports_the_cli():
    bad = [
        f"{m} imports {t}"
        for m in MODULES
        if m.split(".")[0] == "grefel"
        for t, _ in _imports(m)
        if t.startswith("grefel_cli")
    ]
    assert bad == []


def test_no_import_circles():
    graph = {m: {t for t, _ in _imports(m)} for m in MODULES}
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for m in graph:
        if m not in index:
            visit(m)
    assert circles == []


def test_a_few_modules_at_the_top():
    top = [m for m in MODULES if m.count(".") == 1 and m.startswith("grefel.") and MODULES[m].name != "__init__.py"]
    assert len(top) <= MAX_TOP_MODULES, sorted(top)


def test_function_level_imports_say_why():
    """Inside a function the library imports only a heavy optional dependency, marked ``# lazy: why``."""
    unmarked = []
    for m, path in MODULES.items():
        if not m.startswith("grefel") or m.startswith("grefel_cli"):
            continue
        lines = path.read_text().splitlines()
        parents = _parents(ast.parse(path.read_text()))
        for _, node in _imports(m):
            text = "\n".join(lines[node.lineno - 1 : node.end_lineno])
            if _in_function(node, parents) and "# lazy:" not in text:
                unmarked.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert unmarked == []


def test_functions_fit_on_a_screen():
    long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def test_one_thing_per_name():
    """No two library modules define a public class, function or constant of the same name."""
    where = collections.defaultdict(list)
    for m, path in MODULES.items():
        if not m.startswith("grefel.") or m.startswith("grefel_cli"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            else:
                continue
            for name in names:
                if not name.startswith("_"):
                    where[name].append(m)
    assert {k: v for k, v in where.items() if len(v) > 1} == {}


def test_every_deferred_import_resolves():
    """Imports inside functions (the CLI's, which keep `grefel --help` fast, and the library's lazy
    ones) name modules and attributes that exist."""
    import importlib

    missing = []
    for path in MODULES.values():
        parents = _parents(tree := ast.parse(path.read_text()))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grefel")):
                continue
            if not _in_function(node, parents):
                continue
            mod = importlib.import_module(node.module)
            for a in node.names:
                if not hasattr(mod, a.name) and f"{node.module}.{a.name}" not in MODULES:
                    missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}")
    assert missing == []
