"""The package's shape: what each module says it exports, and where the SDK may be used.

The layers and the absence of import cycles are import-linter's contracts
(``[tool.importlinter]`` in pyproject.toml, run by ``scripts/test``).
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

import poolscope

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "poolscope"
SDK_ONLY = ("opentelemetry.sdk", "opentelemetry.exporter")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def _imported_from(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = importer.split(".")
    package = parts if MODULES[importer].name == "__init__.py" else parts[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _interfaces() -> dict[str, set[str]]:
    """Module -> the names other modules of the package take from it (imported or as
    attributes of the module), and the public functions and classes it defines."""
    wanted: dict[str, set[str]] = collections.defaultdict(set)
    for importer, tree in TREES.items():
        modules = {}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _imported_from(importer, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    modules[alias.asname or alias.name] = f"{source}.{alias.name}"
                elif source in MODULES:
                    wanted[source].add(alias.name)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
            ):
                wanted[modules[node.value.id]].add(node.attr)
    for name, tree in TREES.items():
        wanted[name] |= {
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
    return {
        name: {n for n in names if not n.startswith("_") or n == "__version__"}
        for name, names in wanted.items()
    }


def _declared(tree: ast.Module) -> set[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return None


def test_every_modules_all_names_what_the_rest_of_the_package_uses_from_it() -> None:
    problems = {}
    for name, wanted in _interfaces().items():
        if name not in TREES or not wanted:
            continue
        declared = _declared(TREES[name])
        if declared is None:
            problems[name] = f"no __all__; others use {sorted(wanted)}"
        elif wanted - declared:
            problems[name] = f"missing from __all__: {sorted(wanted - declared)}"
    assert not problems, problems


IMPORTABLE = sorted(name for name in MODULES if name != "poolscope.__main__")  # that one runs


@pytest.mark.parametrize("name", IMPORTABLE, ids=IMPORTABLE)
def test_every_name_in_all_exists(name: str) -> None:
    module = __import__(name, fromlist=["_"])
    missing = [n for n in getattr(module, "__all__", ()) if not hasattr(module, n)]
    assert not missing


def test_only_configure_imports_the_sdk_and_exporters() -> None:
    """The SDK is an extra (``poolscope[otlp]``): the instrumentation runs on the API alone."""
    found = []
    for name, tree in TREES.items():
        if name.startswith("poolscope._sdk"):
            continue
        for node in ast.walk(tree):
            modules = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            found += [f"{name}: {m}" for m in modules if m.startswith(SDK_ONLY)]
    assert not found


def test_every_subpackage_says_what_it_may_import() -> None:
    for name, path in MODULES.items():
        if path.name == "__init__.py" and name != "poolscope":
            doc = ast.get_docstring(TREES[name]) or ""
            assert "import" in doc, name


@pytest.mark.parametrize("name", [n for n in poolscope.__all__ if not n.startswith("__")])
def test_public_objects_show_as_poolscope(name: str) -> None:
    assert getattr(poolscope, name).__module__ == "poolscope"


def test_the_readme_states_the_supported_range_of_every_patched_library() -> None:
    from packaging.requirements import Requirement

    from poolscope._runtime import SUPPORTED

    readme = (SRC.parent / "README.md").read_text()
    status = readme[readme.index("## Status") :]
    for requirement in map(Requirement, SUPPORTED.values()):
        assert requirement.name in status.lower(), requirement
        for spec in requirement.specifier:
            sign = {">=": "≥", "<": "<"}[spec.operator]
            assert f"{sign} {spec.version}" in status, (requirement, spec)


def _diagram() -> set[str]:
    """The modules docs/architecture.md draws, as dotted names."""
    text = (SRC.parent / "docs" / "architecture.md").read_text()
    block = text.split("```\npoolscope/\n", 1)[1].split("```", 1)[0]
    lines = block.splitlines()
    column = lines[0].index("leaves")  # where every row's description starts
    found = set()
    packages: list[tuple[int, str]] = []  # (indent, dotted name) of the open folders
    for line in lines:
        names = line[:column].split()
        if not names:
            continue
        indent = len(line) - len(line.lstrip())
        if names[0].endswith("/"):
            while packages and packages[-1][0] >= indent:
                packages.pop()
            parent = packages[-1][1] if packages else "poolscope"
            packages.append((indent, f"{parent}.{names[0].rstrip('/')}"))
            found.add(packages[-1][1])
            names = names[1:]
        elif indent == 2:  # a row of top-level modules
            packages = []
        where = packages[-1][1] if packages else "poolscope"
        found.update(f"{where}.{name}" for name in names if name != "__init__")
    return found | {"poolscope"}


def test_the_architecture_diagram_shows_every_module_and_only_those() -> None:
    assert _diagram() == set(MODULES)
