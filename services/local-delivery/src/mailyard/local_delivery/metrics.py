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
AUTOREPLIES = Counter(
    "mailyard_local_autoreplies",
    "Deliveries to a mailbox with a vacation message on, by what became of the reply: "
    "sent, repeat (answered within the interval), excluded (RFC 3834: list, bulk, automatic "
    "or not addressed to the mailbox), inactive (off, or outside its dates), failed.",
    ["result"],
)
QUOTA_WARNINGS = Counter(
    "mailyard_local_quota_warnings",
    "Quota warnings written into mailboxes at or above the warning level, by result: "
    "sent (in new/), failed (not written: see the log).",
    ["result"],
)
LIST_COMMANDS = Counter(
    "mailyard_local_list_commands",
    "Mail to a subscribe / unsubscribe address of a list that takes them, by result: "
    "requested (a confirmation request sent), limited (a request over its bounds, dropped "
    "unanswered), subscribed, unsubscribed, returned (mail to a list's -return address, "
    "dropped), refused (a cookie invalid or expired, a list closed meanwhile, a bad "
    "address), excluded (automatic or null sender, or bulk mail: not answered), failed "
    "(directory or queue unavailable).",
    ["result"],
)

RESULTS = ("delivered", "deferred", "failed")
AUTOREPLY_RESULTS = ("sent", "repeat", "excluded", "inactive", "failed")
for _result in RESULTS:  # export zeroes, so rate() works from the first scrape
    DELIVERIES.labels(_result)
for _result in AUTOREPLY_RESULTS:
    AUTOREPLIES.labels(_result)
for _result in ("sent", "failed"):
    QUOTA_WARNINGS.labels(_result)
for _result in ("requested", "limited", "subscribed", "unsubscribed", "returned", "refused",
                "excluded", "failed"):
    LIST_COMMANDS.labels(_result)
