"""The tree's structure: imports one way (commands -> library), in no circle; private members listed; short modules."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "keras_ultimus"
# The command modules: each parses flags, calls the library and prints; nothing else may import them.
COMMANDS = {
    "keras_ultimus.train",
    "keras_ultimus.lr_find",
    "keras_ultimus.export",
    "keras_ultimus.predict",
    "keras_ultimus.bench",
    "keras_ultimus.data",
    "keras_ultimus.tuner.tune",
    "keras_ultimus.tuner.launch",
    "keras_ultimus.report.cli",
    "keras_ultimus.report.__main__",
}
# Top-level library modules every kind uses; everything else lives in the subpackage of its kind.
SHARED = {
    "keras_ultimus",
    "keras_ultimus.backend",
    "keras_ultimus.errors",
    "keras_ultimus.provenance",
    "keras_ultimus.config",
    "keras_ultimus.constants",
    "keras_ultimus.flags",
    "keras_ultimus.fields",
    "keras_ultimus.plotting",
}
KINDS = {"models", "datasets", "training", "serving", "benchmark", "report", "tuner", "runs"}
# Packages that must not import each other in either direction (sideways), besides the no-two-way rule.
APART = [("report", "tuner"), ("serving", "training")]
MAX_LINES = 300
# The folders outside the package that the line rule covers too: the experiment driver and the tools.
OUTSIDE = [PACKAGE.parent / "benchmarks", PACKAGE.parent / "tools"]


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
    offenders = {
        m: sorted(deps & COMMANDS)
        for m, deps in imports().items()
        if m not in COMMANDS and deps & COMMANDS
    }
    assert not offenders


def test_keras_ultimus_modules_import_each_other_in_no_circle():
    graph, done, path = imports(), set(), []

    def visit(module):
        if module in path:
            raise AssertionError(" -> ".join(path[path.index(module) :] + [module]))
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph[module]):
            visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def package(module: str) -> str:
    """The node of a module in the package graph: its subpackage, or itself for a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or module.split(".")[-1] in KINDS else module


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Which packages import which, from a module graph."""
    edges: dict[str, set[str]] = {}
    for module, deps in graph.items():
        edges.setdefault(package(module), set()).update(
            package(d) for d in deps if package(d) != package(module)
        )
    return edges


def two_way_edges(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The pairs of packages that import each other."""
    edges = package_graph(graph)
    return sorted(
        (a, b) for a, deps in edges.items() for b in deps if a < b and a in edges.get(b, set())
    )


def test_packages_depend_one_way():
    assert not two_way_edges(imports()), "packages importing each other"


def test_packages_import_each_other_in_no_circle():
    edges, done, path = package_graph(imports()), set(), []

    def visit(node):
        if node in path:
            raise AssertionError(" -> ".join(path[path.index(node) :] + [node]))
        if node in done:
            return
        path.append(node)
        for dep in sorted(edges.get(node, ())):
            visit(dep)
        path.pop()
        done.add(node)

    for node in sorted(edges):
        visit(node)


def test_the_package_check_fails_on_a_two_way_edge():
    graph = {
        "keras_ultimus.serving.loading": {"keras_ultimus.training.recipe"},
        "keras_ultimus.training.recipe": {"keras_ultimus.serving.loading"},
    }
    assert two_way_edges(graph) == [("keras_ultimus.serving", "keras_ultimus.training")]


def test_sideways_packages_do_not_import_each_other():
    edges = package_graph(imports())
    for a, b in APART:
        a, b = f"keras_ultimus.{a}", f"keras_ultimus.{b}"
        assert b not in edges.get(a, set()) and a not in edges.get(b, set()), (a, b)


def test_the_runs_package_imports_no_keras_and_no_other_kind():
    for path in (PACKAGE / "runs").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {
            n for n in names if n.split(".")[0] in ("keras", "keras_tuner", "tensorflow")
        }, path
        assert {package(n) for n in names if n.startswith("keras_ultimus.")} <= SHARED | {
            "keras_ultimus.runs"
        }


def test_library_modules_are_grouped_by_kind_and_top_level_modules_are_commands_or_shared():
    misplaced = [
        m for m in imports() if m not in COMMANDS | SHARED and m.split(".")[1] not in KINDS
    ]
    assert not misplaced
    top_level = {module_name(p) for p in PACKAGE.glob("*.py")}
    assert top_level <= COMMANDS | SHARED


def long_modules(folders: list[Path]) -> dict[str, int]:
    """The modules under `folders` over MAX_LINES lines, by path, with their line counts."""
    return {
        str(p): n
        for folder in folders
        for p in sorted(folder.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }


def test_no_module_is_over_300_lines():
    assert not long_modules([PACKAGE, *OUTSIDE])


def test_the_line_rule_finds_a_long_module_anywhere_below_a_folder(tmp_path):
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "short.py").write_text("x = 1\n" * MAX_LINES)
    assert long_modules([tmp_path]) == {str(tmp_path / "deep" / "long.py"): MAX_LINES + 1}


def test_tools_import_nothing_from_benchmarks():
    for path in (PACKAGE.parent / "tools").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {n for n in names if n.split(".")[0] == "benchmarks"}, path


def test_no_module_imports_keras_private_api():
    for path in PACKAGE.rglob("*.py"):
        assert "keras.src" not in path.read_text(), path.relative_to(PACKAGE.parent)


def test_choices_are_defined_once_in_the_keras_free_constants_module():
    from keras_ultimus import constants
    from keras_ultimus.datasets import pipelines
    from keras_ultimus.models import layers
    from keras_ultimus.models import ultimus as model
    from keras_ultimus.training import distribute

    assert layers.ATTENTION is constants.ATTENTION
    assert (model.STEMS, model.POOLING, model.CLASS_NAMES) == (
        constants.STEMS,
        constants.POOLING,
        constants.CLASS_NAMES,
    )
    assert (pipelines.KINDS, distribute.MODES) == (constants.PIPELINES, constants.DISTRIBUTE_MODES)
    assert pipelines.KINDS is constants.PIPELINES and distribute.MODES is constants.DISTRIBUTE_MODES
    assert constants.__doc__ and not [
        n for n in vars(constants) if n.islower() and not n.startswith("__")
    ]


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_members_used() -> set[str]:
    """The private Keras and KerasTuner members the package reads, sets or overrides.

    A name one of our classes defines (a method, or set on `self`) is theirs when a Keras or
    KerasTuner class in the MRO of one of our classes has it (in its dict or its source); a private
    name only read (`model._flatten_layers()`, `self._tried_so_far`) is theirs when we never define it.
    """
    import importlib
    import inspect

    defined: dict[tuple[str, str], set[str]] = {}
    read, everything_defined = set(), set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and is_private(node.attr)
                and isinstance(node.ctx, ast.Load)
                and not (isinstance(node.value, ast.Name) and node.value.id == "argparse")
            ):
                read.add(node.attr)
            if isinstance(node, ast.ClassDef):
                names = {
                    f.name
                    for f in node.body
                    if isinstance(f, ast.FunctionDef) and is_private(f.name)
                }
                names |= {
                    a.attr
                    for a in ast.walk(node)
                    if isinstance(a, ast.Attribute)
                    and is_private(a.attr)
                    and isinstance(a.ctx, ast.Store)
                }
                defined[(module_name(path), node.name)] = names
                everything_defined |= names
    theirs = read - everything_defined
    ours = {}
    for module, name in defined:
        cls = getattr(importlib.import_module(module), name, None)
        if isinstance(cls, type):
            ours[cls] = defined[(module, name)]
    for cls in ours:
        external = [
            c for c in cls.__mro__ if c.__module__.split(".")[0] in ("keras", "keras_tuner")
        ]
        sources = "".join(inspect.getsource(c) for c in external)
        for mine in (c for c in cls.__mro__ if c in ours):
            theirs |= {
                n
                for n in ours[mine]
                if any(n in vars(c) for c in external) or f"self.{n}" in sources
            }
    return theirs


def test_the_private_keras_and_kerastuner_members_used_are_the_ones_with_contract_tests():
    from test_contracts import PRIVATE_MEMBERS

    theirs = private_members_used()
    assert not theirs - set(PRIVATE_MEMBERS), (
        "private members used without a contract test (tests/test_contracts.py)"
    )
    assert not set(PRIVATE_MEMBERS) - theirs, (
        "listed in tests/test_contracts.py but no longer used: unlist them"
    )


def unresolved_imports(folders: list[Path]) -> list[str]:
    """`from keras_ultimus... import name` lines, in the .py files below `folders`, that name no module or
    top-level name of the package (scripts outside the tests run only by hand, so a rename can leave them stale)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    broken = []
    for path in (p for folder in folders for p in folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_ultimus")
            ):
                continue
            namespace = (PACKAGE.parent / node.module.replace(".", "/")).is_dir()
            if node.module not in modules and not namespace:
                broken.append(f"{path.name}: {node.module}")
                continue
            defined = set()
            source = modules[node.module].read_text() if node.module in modules else ""
            for top in ast.parse(source).body:
                if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    defined.add(top.name)
                elif isinstance(top, (ast.Import, ast.ImportFrom)):
                    defined |= {(a.asname or a.name).split(".")[0] for a in top.names}
                elif isinstance(top, (ast.Assign, ast.AnnAssign)):
                    targets = top.targets if isinstance(top, ast.Assign) else [top.target]
                    defined |= {
                        n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)
                    }
            broken += [
                f"{path.name}: {node.module}.{a.name}"
                for a in node.names
                if a.name not in defined and f"{node.module}.{a.name}" not in modules
            ]
    return broken


def test_every_keras_ultimus_import_of_the_scripts_and_tests_resolves():
    root = PACKAGE.parent
    assert not unresolved_imports([root / "benchmarks", root / "tools", root / "tests"])


def test_the_import_check_finds_a_stale_name(tmp_path):
    (tmp_path / "script.py").write_text(
        "from keras_ultimus.config import RecipeOptions\n"
        "from keras_ultimus.training.recipe_options import RecipeOptions\n"
        "from keras_ultimus.config import NoSuchName\n"
    )
    assert unresolved_imports([tmp_path]) == [
        "script.py: keras_ultimus.training.recipe_options",
        "script.py: keras_ultimus.config.NoSuchName",
    ]
