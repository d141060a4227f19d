"""The small error hierarchy shared by services (typed attributes, no parsing of messages)."""

from __future__ import annotations


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
