"""smtp-ingress test fixtures (defined in ingress_helpers, importable by the tests)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import uvloop

sys.path.insert(0, str(Path(__file__).parent))

from ingress_helpers import (
    ca,
    client_tls,
    ingress,
    local,
    make_ingress,
    relay_auth,
    tls_files,
)

__all__ = ["ca", "client_tls", "ingress", "local", "make_ingress", "relay_auth",
           "tls_files"]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests marked both_loops run on asyncio's loop and on uvloop (the services' default):
    the TLS layers and transports of the two are different code. The others on asyncio's
    alone, as without this hook (which must answer for every test)."""
    if item.get_closest_marker("both_loops") is None:
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
