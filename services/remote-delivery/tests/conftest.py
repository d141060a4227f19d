"""Fixtures of the remote-delivery tests (the parts live in remote_rig.py)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import uvloop

sys.path.insert(0, str(Path(__file__).parent))

from remote_rig import ca, rig, smtp_servers, worker

__all__ = ["ca", "rig", "smtp_servers", "worker"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "settings(**kw): remote-delivery settings for `rig`")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests marked both_loops run on asyncio's loop and on uvloop (the service's default):
    their transports and TLS layers are different code. The others on asyncio's alone."""
    if item.get_closest_marker("both_loops") is None:
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
