"""Metrics every service exports (service-specific ones live in each service's metrics.py).

Naming follows Prometheus: `mailyard_` prefix, base units, `_total` for counters, and
never an address or a domain as a label value.
"""

from __future__ import annotations

from prometheus_client import Gauge, Info

BUILD = Info("mailyard_build", "Mailyard service and version running in this process.")


def set_build(service: str, version: str = "0.1.0") -> None:
    BUILD.info({"service": service, "version": version})

# qmail-send's "status: local 0/10 remote 1/20", for both delivery channels. Each worker
# replica reports the jobs it runs; sum() over replicas is the cluster's use, and the limit
# is the consumer's max_ack_pending (concurrencylocal / concurrencyremote).
CONCURRENCY_IN_USE = Gauge(
    "mailyard_delivery_concurrency_in_use",
    "Delivery jobs this worker is running now (sum over replicas for the cluster).",
    ["channel"],
)
CONCURRENCY_LIMIT = Gauge(
    "mailyard_delivery_concurrency_limit",
    "Cluster-wide delivery concurrency limit (concurrencylocal / concurrencyremote).",
    ["channel"],
)
