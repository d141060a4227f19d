"""Fixtures of the remote-delivery tests (the parts live in remote_rig.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from remote_rig import ca, rig, smtp_servers, worker

__all__ = ["ca", "rig", "smtp_servers", "worker"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "settings(**kw): remote-delivery settings for `rig`")
