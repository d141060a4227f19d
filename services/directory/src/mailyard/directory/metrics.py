"""Metrics of the directory service, declared once."""

from __future__ import annotations

from prometheus_client import Counter

CHANGE_KINDS = ("domain", "mailbox", "alias", "forward", "catchall", "list", "control",
                "settings")

CHANGES = Counter(
    "mailyard_directory_changes",
    "Writes the directory committed to JetStream KV, by kind of record.",
    ["kind"],
)
for _kind in CHANGE_KINDS:
    CHANGES.labels(_kind)


def changed(kind: str) -> None:
    CHANGES.labels(kind).inc()
