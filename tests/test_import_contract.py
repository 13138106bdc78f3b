"""The arrows between sfg's layers, read from the source (docs/architecture.md).

A package may import only packages of a lower rank: errors and the package root at the
bottom, the command line at the top. An import inside a function counts like one at the
top of the module: deferring an import may keep `--help` from loading TensorFlow, but it
must not hide an arrow that points up (a cycle that Python only survives by luck).

A registry lookup (``TASKS.get(name)``) imports the modules that the registry's
"module:attribute" strings name: it counts as an import of each of them, so a cycle
through the registry is a cycle. It is the one way a lower rank may reach a higher one
(the config reads the task types' keys), and only where `LOOKUPS_UP` declares it.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sfg_app"

#: Rank of each top-level package or module of sfg_app; imports point to lower ranks.
RANKS = {
    "errors": 0, "runtime": 0,
    "__init__": 1, "registry": 1, "arguments": 1, "keys": 1, "run_layout": 1,
    "io": 2, "config": 2,
    "data": 3, "layers": 3, "evaluation": 3,
    "networks": 4, "tasks": 4, "demo": 4,
    "application": 5, "planning": 5,
    "engine": 6,
    "commands": 7,
    "cli": 8,
}


#: (package, package it looks up through the registry although of a higher rank).
LOOKUPS_UP = {("config", "tasks")}  # config/schema.py reads each task type's [TASK] keys


def _registry_tables() -> dict[str, set[str]]:
    """Table name in registry.py (TASKS, ...) -> the modules its built-in entries name."""
    tables = {}
    for node in ast.parse((PACKAGE / "registry.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and getattr(node.value.func, "id", None) == "Registry":
            tables[node.targets[0].id] = {
                constant.value.partition(":")[0] for constant in ast.walk(node.value)
                if isinstance(constant, ast.Constant) and isinstance(constant.value, str)
                and constant.value.startswith("sfg_app.") and ":" in constant.value}
    return tables


def _lookups(tree: ast.Module) -> list[tuple[str, int]]:
    """(module, line) for each module a registry lookup (``TABLE.get``) in ``tree`` may
    import, whether the table is imported by name or read as ``registry.TABLE``."""
    tables = _registry_tables()
    by_name, registry_names = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "sfg_app.registry":
            by_name.update({alias.asname or alias.name: alias.name for alias in node.names
                            if alias.name in tables})
        elif isinstance(node, ast.ImportFrom) and node.module == "sfg_app":
            registry_names.update(alias.asname or alias.name for alias in node.names
                                  if alias.name == "registry")
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr == "get"):
            continue
        table = node.value
        if isinstance(table, ast.Name) and table.id in by_name:
            name = by_name[table.id]
        elif isinstance(table, ast.Attribute) and isinstance(table.value, ast.Name) \
                and table.value.id in registry_names and table.attr in tables:
            name = table.attr
        else:
            continue
        found.extend((module, node.lineno) for module in sorted(tables[name]))
    return found


def test_registry_lookups_are_found():
    """The test below sees the lookup through which the config reads the task types."""
    tree = ast.parse((PACKAGE / "config" / "schema.py").read_text(encoding="utf-8"))
    assert "sfg_app.tasks.segmentation" in {module for module, _ in _lookups(tree)}


def _imports():
    """(importing file, its package, imported sfg_app package, line) for every import
    and every registry lookup (but those that `LOOKUPS_UP` declares)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        package = parts[0] if len(parts) > 1 else parts[0][:-3]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found.extend((path, package, module.split(".")[1], line)
                     for module, line in _lookups(tree)
                     if (package, module.split(".")[1]) not in LOOKUPS_UP)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                if node.module == "sfg_app":  # from sfg_app import x
                    names = [f"sfg_app.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name == "sfg_app":
                    found.append((path, package, "__init__", node.lineno))
                elif name.startswith("sfg_app."):
                    found.append((path, package, name.split(".")[1], node.lineno))
    return found


def test_every_package_has_a_rank():
    packages = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir()
                if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    assert packages == set(RANKS)


def test_imports_point_down_the_layers():
    upward = [f"{path.relative_to(PACKAGE.parent)}:{line} ({package}, rank {RANKS[package]}) "
              f"imports {target} (rank {RANKS[target]})"
              for path, package, target, line in _imports()
              if target != package and RANKS[target] >= RANKS[package]]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def _module_name(path: pathlib.Path) -> str:
    parts = ("sfg_app",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_graph() -> dict[str, set[str]]:
    """Module -> the sfg_app modules it imports (inside functions too, and through
    registry lookups). ``from package import name`` counts as importing the submodule
    ``package.name`` when there is one, else the package."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges = {module for module, _ in _lookups(tree)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    edges.add(target if target in modules else node.module)
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
        graph[name] = {target for target in edges if target in modules and target != name}
    return graph


def test_no_module_imports_itself_round_a_cycle():
    """Within a package too: an import moved into a function to survive a cycle hides
    two modules that depend on each other; the shared part belongs in a third."""
    graph = _module_graph()
    cycles = []
    for start in sorted(graph):
        path, stack = [start], [iter(sorted(graph[start]))]
        while stack:  # depth-first search for a path back to `start`
            target = next(stack[-1], None)
            if target is None:
                stack.pop()
                path.pop()
            elif target == start:
                cycles.append(" -> ".join(path + [start]))
                break
            elif target not in path and target > start:  # each cycle once, from its least
                path.append(target)
                stack.append(iter(sorted(graph[target])))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("package", ["layers", "networks"])
def test_the_model_code_stays_free_of_tensorflow(package):
    """So that the networks also run on Keras' torch backend (GPU checks)."""
    for path in (PACKAGE / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                         else [alias.name for alias in node.names])
                assert not any(n.split(".")[0] == "tensorflow" for n in names), path
