"""Metrics every service exports (service-specific ones live in each service's metrics.py).

Naming follows Prometheus: `mailyard_` prefix, base units, `_total` for counters, and
never an address or a domain as a label value.
"""

from __future__ import annotations

from prometheus_client import Info

BUILD = Info("mailyard_build", "Mailyard service and version running in this process.")


def set_build(service: str, version: str = "0.1.0") -> None:
    BUILD.info({"service": service, "version": version})
