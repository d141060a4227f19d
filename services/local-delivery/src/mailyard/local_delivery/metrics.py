"""Every metric of local-delivery, declared once (names fixed in docs/architecture.md).

The concurrency gauges are the shared ones in mailyard.core.metrics, channel="local"."""

from __future__ import annotations

from prometheus_client import Counter

DELIVERIES = Counter(
    "mailyard_local_deliveries",
    "Local deliveries by recipient outcome (delivered, deferred, failed).",
    ["result"],
)
QUOTA_REFUSALS = Counter(
    "mailyard_local_quota_refusals",
    "Deliveries refused because the mailbox was over quota (bounced or deferred).",
)
DELIVERED_BYTES = Counter(
    "mailyard_local_delivered_bytes",
    "Bytes written into mailboxes (with the prepended Return-Path/Delivered-To lines).",
)

RESULTS = ("delivered", "deferred", "failed")
for _result in RESULTS:  # export zeroes, so rate() works from the first scrape
    DELIVERIES.labels(_result)
