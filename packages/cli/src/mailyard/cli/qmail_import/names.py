"""Domain names and addresses checked by the directory's own rules before anything is sent.

The directory service is the one authority on what a domain or a local part may be; the
import calls the same functions up front so that a name the directory would refuse is a
reported line of the dry run, not a failure halfway through the writes.
"""

from __future__ import annotations

from mailyard.directory import validate
from mailyard.directory.errors import Refused


def domain(name: str) -> str:
    """The A-label the directory stores, or ValueError."""
    try:
        return validate.domain(name)
    except Refused as exc:
        raise ValueError(exc.message) from None


def address(local: str, dom: str) -> str:
    """A mailbox, alias or list address in the directory's canonical form, or ValueError."""
    try:
        return validate.address(f"{local}@{dom}")
    except Refused as exc:
        raise ValueError(exc.message) from None


def target(text: str) -> str:
    """A forwarding target anywhere (local part kept as written), or ValueError."""
    try:
        return validate.target(text)
    except Refused as exc:
        raise ValueError(exc.message) from None


def gecos(text: str) -> str:
    """The user's name as the directory stores it, or ValueError."""
    try:
        return validate.gecos(text)
    except Refused as exc:
        raise ValueError(exc.message) from None
