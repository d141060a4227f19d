"""The small error hierarchy shared by services (typed attributes, no parsing of messages)."""

from __future__ import annotations

# Refusals quote what was sent; a gRPC client drops a status whose details pass 16 KiB (it
# reports RESOURCE_EXHAUSTED, the reason lost), so a longer text is cut.
MAX_STATUS_DETAILS = 1000


def status_details(text: str) -> str:
    """`text` as a gRPC status's details: cut at MAX_STATUS_DETAILS characters."""
    return text if len(text) <= MAX_STATUS_DETAILS else text[:MAX_STATUS_DETAILS] + "..."


class MailyardError(Exception):
    """Base of every error Mailyard raises on purpose."""


class SettingsError(MailyardError):
    """A service refused to start because its settings are unsafe or inconsistent."""


class SpoolError(MailyardError):
    """The spool could not commit or read a message (disk full, I/O error, bad checksum)."""

    def __init__(self, message: str, *, queue_id: str = "") -> None:
        super().__init__(message)
        self.queue_id = queue_id


class ChecksumMismatch(SpoolError):
    """The spooled bytes no longer match the checksum recorded at commit."""


class BusError(MailyardError):
    """NATS / JetStream did not take or give a message in time."""
