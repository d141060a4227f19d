"""Suite-wide: each pytest-xdist worker picks its servers' ports from a range of its own,
below the kernel's ephemeral ports (32768+), so two workers never choose the same port and
no outgoing connection takes one as its source port between picking and binding."""

from __future__ import annotations

import os

from mailyard.core.natsserver import PORT_RANGE_ENV

SPAN = 2500
# tests/containers runs the platform from its images (minutes, root, podman): only under
# `make test-containers`, which builds the images first and sets this.
collect_ignore = [] if os.environ.get("MAILYARD_CONTAINER_TESTS") else ["tests/containers"]


def pytest_configure() -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... ("" without xdist)
    slot = int(worker[2:]) % 8 if worker.startswith("gw") else 8
    low = 10000 + slot * SPAN  # 10000 .. 32499: under the ephemeral range
    os.environ[PORT_RANGE_ENV] = f"{low}-{low + SPAN - 1}"  # workers inherit the main one
