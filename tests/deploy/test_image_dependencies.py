"""What the image installs is what each pyproject declares (a non-editable install of the
workspace members). The dev venv has more (pytest, trustme, ...), so an undeclared import
works in tests and fails only in the container. Every third-party module a member's code
imports must come from its declared dependencies, directly or transitively."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.tools import ROOT

MEMBERS = sorted([*(ROOT / "packages").glob("*/pyproject.toml"),
                  *(ROOT / "services").glob("*/pyproject.toml")])


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def closure(names: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = [_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def imported_modules(src: Path) -> set[str]:
    """Top-level modules a member's code imports."""
    found: set[str] = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"mailyard", "__future__"}


@pytest.mark.parametrize("pyproject", MEMBERS, ids=lambda p: p.parent.name)
def test_imports_are_declared_dependencies(pyproject: Path) -> None:
    project = tomllib.loads(pyproject.read_text())["project"]
    available = closure([project["name"], *project.get("dependencies", [])])
    dists = md.packages_distributions()
    missing = {}
    for module in sorted(imported_modules(pyproject.parent / "src")):
        providers = {_name(d) for d in dists.get(module, [])}
        if providers and not providers & available:
            missing[module] = sorted(providers)
    assert not missing, (f"{project['name']} imports modules its dependencies do not bring "
                         f"(the image would fail to start): {missing}")


def runtime_members() -> list[Path]:
    """The members the image installs: the Makefile's MEMBERS (the Dockerfile installs each,
    test_dockerfile checks); DEV_MEMBERS (the test support) are not among them."""
    makefile = (ROOT / "Makefile").read_text()
    members = re.search(r"^MEMBERS := (.*?)(?:\n\S|\Z)", makefile, re.S | re.M)
    assert members
    return [ROOT / m / "pyproject.toml" for m in members.group(1).replace("\\", " ").split()]


def test_runtime_members_never_bring_the_test_support() -> None:
    runtime = runtime_members()
    assert ROOT / "packages/testing/pyproject.toml" not in runtime
    for pyproject in runtime:
        project = tomllib.loads(pyproject.read_text())["project"]
        brought = closure([project["name"], *project.get("dependencies", [])])
        assert not brought & {"mailyard-testing", "pytest"}, project["name"]
        for path in (pyproject.parent / "src").rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n.startswith("mailyard.testing") for n in names), path
