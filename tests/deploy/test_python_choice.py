"""scripts/python.sh: the interpreter `make` makes .venv with. The distribution's optimised
CPython when it can make a venv (docs/architecture.md, "Where the time goes"), else python3
on PATH; never one older than 3.11."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "python.sh"


def choose(candidates: str | None = None, path: str | None = None) -> str:
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    env.pop("PYTHON_CANDIDATES", None)
    if candidates is not None:
        env["PYTHON_CANDIDATES"] = candidates
    return subprocess.run([str(SCRIPT)], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


def qualifies(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import sys, ensurepip; "
                               "sys.exit(sys.version_info < (3, 11))"],
                              check=False, capture_output=True).returncode == 0
    except OSError:
        return False


def fake_python(folder: Path, name: str, *, exit_code: int) -> Path:
    """A 'python' that answers the version check with exit_code (1: too old, or no venv)."""
    fake = folder / name
    fake.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    fake.chmod(0o755)
    return fake


def test_the_default_choice_is_a_python_that_can_make_the_venv() -> None:
    assert qualifies(choose())


def test_the_first_candidate_that_qualifies_is_chosen(tmp_path: Path) -> None:
    old = fake_python(tmp_path, "python3.9", exit_code=1)
    good = tmp_path / "python3"
    good.symlink_to(sys.executable)
    assert choose(f"{tmp_path}/missing {old} {good} /usr/bin/python3") == str(good)


def test_when_none_qualifies_python3_on_path_is_named(tmp_path: Path) -> None:
    # make then runs `python3 -m venv`, which fails with its own message, as before
    old = fake_python(tmp_path, "python3.9", exit_code=1)
    assert choose(f"{old} {tmp_path}/missing") == "python3"


@pytest.mark.skipif(not qualifies("/usr/bin/python3"),
                    reason="no distribution python3 that can make a venv here")
def test_the_distributions_python_comes_before_the_one_first_on_path(tmp_path: Path) -> None:
    # a python3 first on PATH (as pyenv's shims are) does not win over /usr/bin/python3
    (tmp_path / "python3").symlink_to(sys.executable)
    assert choose(path=f"{tmp_path}:{os.environ['PATH']}") == "/usr/bin/python3"
