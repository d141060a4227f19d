"""Where tests/deploy finds its tools: the venv first (pip-installed linters), then PATH
(Debian's promtool / prometheus). .ci/run installs all of them."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVICES = ["smtp-ingress", "queue", "remote-delivery", "local-delivery", "relay-auth",
            "directory"]
GRPC_SERVICES = {"queue", "remote-delivery", "relay-auth", "directory"}
HTTP_ONLY_SERVICES = {"smtp-ingress", "local-delivery"}


def tool(name: str, how: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        message = f"{name} is not installed ({how}); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run these checks, never skip them
        pytest.skip(message)
    return found
