"""Layers point down only: cdsrules (the command line) -> webhook -> store and engine; schemas below all.

Every import is read from the source (module level and inside functions alike), so a lazy import that reaches up
is caught as well as an eager one."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ["cdsrules", "engine", "schemas", "store", "webhook"]
MAY_NOT_IMPORT = {  # package -> the top-level packages none of its modules may import
    "engine": {"cdsrules", "webhook", "store", "tests", "bench"},
    "store": {"cdsrules", "webhook", "engine", "tests", "bench"},
    "webhook": {"cdsrules", "tests", "bench"},
    "schemas": {"cdsrules", "webhook", "engine", "store", "tests", "bench"},
    "cdsrules": {"tests", "bench"},
}
WITHIN_ENGINE = {  # engine module -> engine modules it may not import: analysis is below both checker and compiler
    "engine.compiler": {"engine.checks"},
    "engine.certainty": {"engine.checks"},
    "engine.analysis": {"engine.checks", "engine.compiler"},
    "engine.fhir": {"engine.cohort", "engine.simulate", "engine.diff", "engine.runtime"},
}


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module name an import statement in the file names, relative imports resolved."""
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def test_the_layout_is_what_this_test_reads():
    for package in PACKAGES:
        assert modules(package), package
    assert "engine.fhir.record" in {module_name(p) for p in modules("engine")}


@pytest.mark.parametrize("package", sorted(MAY_NOT_IMPORT))
def test_no_module_imports_a_layer_above_its_own(package):
    upward = sorted(f"{module_name(path)} imports {name}" for path in modules(package) for name in imported(path)
                    if name.split(".")[0] in MAY_NOT_IMPORT[package])
    assert upward == []


@pytest.mark.parametrize("lower", sorted(WITHIN_ENGINE))
def test_engine_modules_point_down_inside_the_engine(lower):
    paths = [p for p in modules("engine") if module_name(p) == lower or module_name(p).startswith(lower + ".")]
    assert paths, lower
    upward = sorted(f"{module_name(path)} imports {name}" for path in paths for name in imported(path)
                    if any(name == banned or name.startswith(banned + ".") for banned in WITHIN_ENGINE[lower]))
    assert upward == []


def test_the_reader_sees_relative_and_lazy_imports():
    """The check itself: a lazy relative import inside a function is read as the module it names."""
    assert "engine.fhir.load" in imported(REPO / "engine" / "fhir" / "__init__.py")
    assert "webhook.server" in imported(REPO / "cdsrules" / "cli.py")  # imported inside cmd_serve
