"""dvc.yaml's `deps` cover the code each stage runs. For every stage whose command is `lips ...`, the lipslib
files it may execute are computed from the source with `ast` (nothing is imported): the `lips` entry point
(lipslib/cli.py, its module-level imports, `main` and the subcommand's handler with the cli functions they
call), for `lips notebook NAME` the code cells of notebooks/NAME.ipynb, and from there every lipslib module
reachable by imports, at module level or inside functions, including names resolved lazily through the
`_EXPORTS` map of lipslib/__init__.py. Data files under lipslib/data/ that a reached module names count too.
A stage whose `deps` miss one of those files fails, listing them; a dep on a folder covers what lies in it.

Module granularity on purpose: a module's every function-level import counts, as which functions run is not
decided here. Only cli.py is followed by function, since each of its commands imports a different part."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

PACKAGE = "lipslib"
PKG_DIR = ROOT / PACKAGE
DATA_DIR = PKG_DIR / "data"
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


# --------------------------------------------------------------------------------------------- module files
def module_file(dotted: str) -> Path | None:
    """lipslib.x.y → lipslib/x/y.py or lipslib/x/y/__init__.py; None when no such module."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lazy_exports() -> dict[str, str]:
    """`_EXPORTS` of lipslib/__init__.py: public name → the module that defines it (resolved on first use)."""
    for node in ast.parse((PKG_DIR / "__init__.py").read_text()).body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if isinstance(target, ast.Name) and target.id == "_EXPORTS":
            return ast.literal_eval(node.value)
    raise AssertionError("lipslib/__init__.py has no _EXPORTS map")


EXPORTS = lazy_exports()


def _member(package: str, name: str) -> set[str]:
    """What `from package import name` (or `package.name`) loads: the submodule, or the module a lazy export
    resolves to; a name defined in the package itself loads only the package."""
    sub = f"{package}.{name}"
    if module_file(sub):
        return {sub}
    if package == PACKAGE and name in EXPORTS:
        return {EXPORTS[name]}
    return set()


def _parents(dotted: str) -> set[str]:
    """Importing lipslib.a.b runs lipslib/__init__.py and lipslib/a/__init__.py first."""
    parts = dotted.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


# ------------------------------------------------------------------------------------------- import parsing
def imported_modules(tree: ast.AST, current: str = "") -> set[str]:
    """lipslib modules an AST imports anywhere in it: `import lipslib.x`, `from lipslib import x`,
    `from lipslib.x import y`, relative imports (inside the package, `current` being the importing module),
    `importlib.import_module("lipslib.x")`, and attribute use `L.x` / `lipslib.x` on a name bound to the
    package (`import lipslib as L`), x a submodule or a lazy export."""
    found: set[str] = set()
    package_names: set[str] = set()  # local names bound to the package object itself
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != PACKAGE:
                    continue
                found.add(alias.name)
                if alias.asname is None:
                    package_names.add(PACKAGE)  # `import lipslib.x` binds `lipslib`
                elif alias.name == PACKAGE:
                    package_names.add(alias.asname)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = current.split(".")
                is_package = module_file(current) is not None and module_file(current).name == "__init__.py"
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != PACKAGE:
                continue
            found.add(source)
            for alias in node.names:
                found |= _member(source, alias.name)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                value = node.args[0].value
                if isinstance(value, str) and value.split(".")[0] == PACKAGE:
                    found.add(value)
    if package_names:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in package_names:
                found |= _member(PACKAGE, node.attr)
    return {m for dotted in found for m in _parents(dotted) if module_file(m)}


def data_files(tree: ast.AST) -> set[Path]:
    """lipslib/data/ files a module names in a string (not a docstring): `files("lipslib") / "data/x.csv"`."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    strings = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]
    return {f for f in DATA_DIR.rglob("*") if f.is_file() and any(f.name in s for s in strings)}


def parse_file(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def closure(modules: set[str], followed: frozenset[str] = frozenset()) -> set[Path]:
    """Files of the lipslib modules reachable from `modules` by imports, module- and function-level, plus the
    lipslib/data/ files they name. Modules in `followed` have had their imports counted already (the CLI, by
    subcommand): their files are included, their imports not read again."""
    seen: set[str] = set()
    todo = [m for start in modules for m in _parents(start) if module_file(m)]
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        files.add(path)
        tree = parse_file(path)
        files |= data_files(tree)
        if name not in followed:
            todo += sorted(imported_modules(tree, name) - seen)
    return files


# ------------------------------------------------------------------------------------------------- notebooks
_MAGIC = re.compile(r"^\s*[%!]")


def notebook_tree(path: Path) -> ast.Module:
    """The notebook's code cells as one module; IPython magics and shell lines are blanked."""
    body = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        source = "\n".join("" if _MAGIC.match(line) else line for line in source.splitlines())
        try:
            body += ast.parse(source, filename=f"{path}[cell {i}]").body
        except SyntaxError as e:  # an unreadable cell would hide its imports: fail rather than skip it
            raise AssertionError(f"{path.name}: code cell {i} does not parse: {e}") from None
    return ast.Module(body=body, type_ignores=[])


# ---------------------------------------------------------------------------------------------- the `lips` CLI
def cli_module() -> str:
    """The module of the `lips` console script (pyproject.toml, [project.scripts]); its function is `main`."""
    entry = re.search(r'^lips\s*=\s*"([\w.]+):(\w+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert entry and entry[2] == "main", 'pyproject.toml: expected lips = "<module>:main" in [project.scripts]'
    return entry[1]


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def subcommand_handlers(tree: ast.Module) -> dict[str, str]:
    """`lips` subcommand → handler, read from build_parser: `s = sub.add_parser("x", ...)` then
    `s.set_defaults(func=cmd_x)`."""
    parsers: dict[str, list[str]] = {}  # variable → the subcommand names it was made for
    handlers: dict[str, str] = {}
    nodes = [n for n in ast.walk(_functions(tree)["build_parser"]) if isinstance(n, (ast.Assign, ast.Call))]
    for node in sorted(nodes, key=lambda n: (n.lineno, n.col_offset)):  # source order (ast.walk is breadth-first)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            if isinstance(call.func, ast.Attribute) and call.func.attr == "add_parser" and call.args:
                names = [call.args[0].value]
                for kw in call.keywords:
                    if kw.arg == "aliases":
                        names += ast.literal_eval(kw.value)
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        parsers[target.id] = names
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "set_defaults":
            owner = node.func.value
            for kw in node.keywords:
                if kw.arg == "func" and isinstance(kw.value, ast.Name) and isinstance(owner, ast.Name):
                    for name in parsers.get(owner.id, []):
                        handlers[name] = kw.value.id
    return handlers


def cli_modules(subcommand: str) -> set[str]:
    """lipslib modules `lips SUBCOMMAND` imports: the CLI module's module-level imports, and those inside
    `main`, the subcommand's handler and the CLI functions these call (not the other commands' handlers)."""
    name = cli_module()
    tree = parse_file(module_file(name))
    functions = _functions(tree)
    handlers = subcommand_handlers(tree)
    assert subcommand in handlers, f"`lips {subcommand}` is not a subcommand of {name}"
    top_level = ast.Module(body=[n for n in tree.body if n not in functions.values()], type_ignores=[])
    found = {name} | imported_modules(top_level, name)
    todo, seen = ["main", handlers[subcommand]], set()
    while todo:
        func = todo.pop()
        if func in seen:
            continue
        seen.add(func)
        found |= imported_modules(functions[func], name)
        todo += [
            n.func.id
            for n in ast.walk(functions[func])
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in functions
        ]
    return found


def stage_code(stage: dict) -> set[Path]:
    """The lipslib files (and lipslib/data/ files) a `lips ...` stage may execute."""
    argv = stage["cmd"].split()
    assert argv[0] == "lips", stage["cmd"]
    modules = cli_modules(argv[1])
    if argv[1] == "notebook":
        modules |= imported_modules(notebook_tree(ROOT / "notebooks" / f"{argv[2]}.ipynb"))
    return closure(modules, followed=frozenset({cli_module()}))


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT).parts
    return any(rel[: len(d)] == d for d in (Path(dep.rstrip("/")).parts for dep in deps))


LIPS_STAGES = [name for name, stage in STAGES.items() if stage["cmd"].split()[0] == "lips"]


# ---------------------------------------------------------------------------------------------------- tests
def test_every_notebook_stage_and_the_config_stage_are_checked():
    from lipslib.pipeline.notebooks import NOTEBOOKS  # pure: config, errors

    run = {stage["cmd"].split()[2] for stage in STAGES.values() if stage["cmd"].split()[:2] == ["lips", "notebook"]}
    assert run == set(NOTEBOOKS)
    assert "config" in LIPS_STAGES and len(LIPS_STAGES) == len(NOTEBOOKS) + 1


@pytest.mark.parametrize("name", LIPS_STAGES)
def test_stage_deps_cover_the_code_it_runs(name):
    stage = STAGES[name]
    deps = stage.get("deps", [])
    missing = sorted(str(p.relative_to(ROOT)) for p in stage_code(stage) if not covered(p, deps))
    assert not missing, f"stage '{name}' ({stage['cmd']}) runs code its deps miss:\n  " + "\n  ".join(missing)


# The closure itself, on what is known to be there: if the parsing broke, the test above would pass vacuously.
def test_the_closure_follows_the_cli_the_lazy_map_and_function_level_imports():
    code = {str(p.relative_to(ROOT)) for p in stage_code({"cmd": "lips notebook 04_benchmark"})}
    assert {
        "lipslib/__init__.py",
        "lipslib/cli.py",
        "lipslib/pipeline/notebooks.py",
        "lipslib/cfg/__init__.py",
        "lipslib/errors.py",
        "lipslib/pipeline/benchmark.py",
        "lipslib/runtime.py",
        "lipslib/pruning/engine.py",
        "lipslib/data/yolo_family.csv",
    } <= code
    assert "lipslib/pruning/latency.py" in code  # benchmark.measure imports it inside the function
    config = {str(p.relative_to(ROOT)) for p in stage_code(STAGES["config"])}
    assert {"lipslib/cli.py", "lipslib/pipeline/notebooks.py", "lipslib/cfg/__init__.py"} <= config
    assert "lipslib/pipeline/loop.py" not in config  # the other subcommands' handlers are not followed
    assert "lipslib/pipeline/benchmark.py" not in config


def test_import_forms():
    tree = ast.parse(
        "import lipslib as L\n"
        "from lipslib import prune\n"
        "from lipslib.pipeline import notebooks as nb\n"
        "def f():\n"
        "    import lipslib.pruning.spec\n"
        "    from lipslib.schedule import update\n"
        "    return L.load_params, L.compare_video\n"
    )
    found = imported_modules(tree)
    assert found == {
        "lipslib",
        "lipslib.pipeline",
        "lipslib.pipeline.notebooks",
        "lipslib.pruning",
        "lipslib.pruning.engine",
        "lipslib.pruning.spec",
        "lipslib.schedule",
        "lipslib.cfg",
        "lipslib.pipeline.video",
    }
    relative = ast.parse("from ..files import write_json\nfrom . import layers\n")
    assert imported_modules(relative, "lipslib.pruning.engine") >= {"lipslib.files", "lipslib.pruning.layers"}
