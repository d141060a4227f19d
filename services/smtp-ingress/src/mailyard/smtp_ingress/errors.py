"""How a command handler unwinds the session: the exceptions the command loop in
session.py turns into a last reply (or none) and a closed connection. Their own module, so
the phase modules (ehlo, auth, mail, rcpt, data) import them without importing the session.
"""

from __future__ import annotations


class Disconnect(Exception):
    """The client went away (EOF, reset)."""


class IdleTimeout(Exception):
    """No complete input within IDLE_TIMEOUT, or DATA slower than MIN_DATA_RATE."""


class Close(Exception):
    """Send this reply, then close the connection."""

    def __init__(self, reply: str, reason: str = "") -> None:
        super().__init__(reply)
        self.reply = reply
        self.reason = reason


class LineTooLong(Exception):
    """A command line over the limit (consumed; the caller replies)."""
