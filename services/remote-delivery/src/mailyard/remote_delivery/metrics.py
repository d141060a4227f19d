"""Metrics of remote-delivery, declared once (names fixed in docs/architecture.md).

Label values are bounded sets; never a domain, host or address.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from mailyard.core.metrics import CONCURRENCY_IN_USE, CONCURRENCY_LIMIT

CHANNEL = "remote"
IN_USE = CONCURRENCY_IN_USE.labels(CHANNEL)
LIMIT = CONCURRENCY_LIMIT.labels(CHANNEL)

# One value per replica, no destination label: the share of PER_DESTINATION_LIMIT this
# replica allows per address:port, max(1, ceil(limit / replicas counted in remote_members)).
DESTINATION_LIMIT = Gauge(
    "mailyard_remote_destination_limit",
    "Transactions this replica runs at once per destination (address:port).",
)
DELIVERIES = Counter(
    "mailyard_remote_deliveries_total",
    "Recipients handled by remote delivery, by result (delivered, deferred, failed).",
    ["result"],
)
DELIVERY_SECONDS = Histogram(
    "mailyard_remote_delivery_seconds",
    "Time from taking a job to publishing its result.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
CONNECTIONS = Counter(
    "mailyard_remote_connections_total",
    "SMTP connections to remote hosts, by kind (opened, reused, failed).",
    ["kind"],
)
TLS = Counter(
    "mailyard_remote_tls_total",
    "STARTTLS outcome per connection (established, not_offered, failed, disabled).",
    ["result"],
)
# Bounded reasons: see DEFERRAL_REASONS.
DEFERRAL_REASONS = ("connect", "greeting", "dns", "tls", "auth", "sender", "recipient",
                    "data", "lost", "spool", "internal")
DEFERRALS = Counter(
    "mailyard_remote_deferrals_total",
    "Deferred recipients by reason (a bounded set, never a domain).",
    ["reason"],
)
# Mail the platform wrote itself, at egress signing (signing.py); other mail is not counted.
DKIM_RESULTS = ("signed", "no_key", "not_entitled", "long_line", "error")
DKIM_SIGNED = Counter(
    "mailyard_remote_dkim_sign",
    "Mail the platform wrote itself (bounces, double bounces, vacation replies) at DKIM "
    "signing: signed, no_key (From: domain without a signing key), not_entitled (a vacation "
    "reply whose mailbox domain has no keys of its own, only a parent: sent unsigned), "
    "long_line (a line over 998 octets, which folding would break: sent unsigned), error "
    "(the signer failed: sent unsigned).",
    ["result"],
)

for _result in ("delivered", "deferred", "failed"):
    DELIVERIES.labels(_result)
for _kind in ("opened", "reused", "failed"):
    CONNECTIONS.labels(_kind)
REUSED = CONNECTIONS.labels("reused")  # once per reused session: bound once
for _reason in DEFERRAL_REASONS:
    DEFERRALS.labels(_reason)
for _result in DKIM_RESULTS:
    DKIM_SIGNED.labels(_result)


def deferral(reason: str) -> None:
    DEFERRALS.labels(reason if reason in DEFERRAL_REASONS else "internal").inc()
