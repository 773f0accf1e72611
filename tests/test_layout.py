"""The package's structure: imports run one way (commands -> library), in no circle, and the package is Keras-private-free."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "keras_ultimus"
# The command modules: each parses flags, calls the library and prints; nothing else may import them.
COMMANDS = {"keras_ultimus.train", "keras_ultimus.lr_find", "keras_ultimus.export", "keras_ultimus.predict",
            "keras_ultimus.bench", "keras_ultimus.data", "keras_ultimus.tuner.tune", "keras_ultimus.tuner.launch",
            "keras_ultimus.report.cli", "keras_ultimus.report.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every keras_ultimus module each module imports, at module level or inside a function."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        graph[name] = {m for m in found if m in modules and m != name and m != "keras_ultimus"}
    return graph


def test_no_library_module_imports_a_command():
    offenders = {m: sorted(deps & COMMANDS) for m, deps in imports().items() if m not in COMMANDS and deps & COMMANDS}
    assert not offenders


def test_keras_ultimus_modules_import_each_other_in_no_circle():
    graph, done, path = imports(), set(), []

    def visit(module):
        if module in path:
            raise AssertionError(" -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph[module]):
            visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_no_module_imports_keras_private_api():
    for path in PACKAGE.rglob("*.py"):
        assert "keras.src" not in path.read_text(), path.relative_to(PACKAGE.parent)


def test_the_keras_free_copies_of_choice_tuples_equal_their_keras_side_originals():
    from keras_ultimus import flags, layers, model
    from keras_ultimus.tuner import hypermodel, options

    assert flags.ATTENTION == layers.ATTENTION
    assert (flags.STEMS, flags.POOLING) == (model.STEMS, model.POOLING)
    assert options.SPACES == hypermodel.SPACES
