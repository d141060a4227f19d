"""The platform's one identity: qmail's control/me and the postmaster address.

`me` names the host in the SMTP greeting, Received: lines, HELO, and the Message-ID and
From of bounces; `postmaster` (control file, default postmaster@<me>) receives double
bounces. Both live in the KV bucket "control", so `mailyard control set me mail.example.net`
reaches every service and replica at once. A service's ME setting (MAILYARD_<SVC>_ME) is
only the fallback for a cluster where control/me was never set.

Every service reads them through Identity; nothing else should read control/me.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from mailyard.core.addresses import split, to_ascii_domain
from mailyard.core.control import ControlView, lines

log = logging.getLogger(__name__)

ME_FILE = "me"
POSTMASTER_FILE = "postmaster"
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# Names that can never be reached from elsewhere: mail to postmaster@<one of these> goes to
# the local postmaster mailbox rather than out by MX (where it would sit deferred for days).
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "localdomain"})
# qmail's ~alias (.qmail-postmaster, .qmail-root, .qmail-mailer-daemon): the names of this
# host that reach its postmaster; any other name of it has no mailbox (is_local_name)
POSTMASTER_NAMES = frozenset({"postmaster", "root", "mailer-daemon"})


def hostname_problem(name: str) -> str | None:
    """Why `name` cannot be `me` (None when it can): a fully qualified, reachable name."""
    ascii_name = to_ascii_domain(name.strip().rstrip("."))
    labels = ascii_name.split(".")
    if not ascii_name or len(ascii_name) > 253 or not all(_LABEL.fullmatch(x) for x in labels):
        return f"not a valid host name: {name!r}"
    if labels[-1].isdigit():
        return f"a host name, not an IP address: {name!r}"
    if ascii_name in LOOPBACK_NAMES or ascii_name.endswith(".localhost"):
        return f"{name!r} names this machine only; bounces from it cannot be answered"
    if len(labels) < 2:
        return f"not fully qualified (needs a dot): {name!r}"
    return None


def address_problem(address: str) -> str | None:
    """Why `address` cannot be the postmaster address (None when it can)."""
    local, domain = split(address.strip())
    if not local or not domain or any(c.isspace() or c in "<>\"," for c in local):
        return f"not an address (local@domain): {address!r}"
    if to_ascii_domain(domain) in LOOPBACK_NAMES:
        return None  # the local postmaster mailbox takes it (see Identity.deliverable)
    problem = hostname_problem(domain)
    return problem and f"domain of {address!r}: {problem}"


def parse_me(text: str) -> str:
    """The one host name of a control/me text, or ValueError."""
    values = lines(text)
    if len(values) != 1:
        raise ValueError(f"control/me holds exactly one host name, got {len(values)} lines")
    problem = hostname_problem(values[0])
    if problem:
        raise ValueError(problem)
    return to_ascii_domain(values[0].rstrip("."))


def parse_postmaster(text: str) -> str:
    values = lines(text)
    if len(values) != 1:
        raise ValueError(
            f"control/postmaster holds exactly one address, got {len(values)} lines")
    problem = address_problem(values[0])
    if problem:
        raise ValueError(problem)
    local, domain = split(values[0].strip())
    return f"{local}@{to_ascii_domain(domain)}"


class Identity:
    """me and postmaster, kept current from the control view."""

    def __init__(self, control: ControlView, fallback_me: str) -> None:
        self.control = control
        self.fallback_me = fallback_me.strip().rstrip(".").lower() or "localhost"
        self._me: str | None = None
        self._postmaster: str | None = None
        self._refresh(ME_FILE, None)
        self._refresh(POSTMASTER_FILE, None)
        control.on_change(self._refresh)

    @property
    def me(self) -> str:
        return self._me or self.fallback_me

    @property
    def postmaster(self) -> str:
        return self._postmaster or f"postmaster@{self.me}"

    @property
    def me_is_set(self) -> bool:
        return self._me is not None

    def deliverable(self, address: str,
                    is_local_domain: Callable[[str], bool] | None = None) -> bool:
        """False for an address that no MX can take: a loopback name, a name without a dot,
        or our own `me` when `me` is not one of the hosted (local) domains. Such a
        double bounce goes to the local postmaster mailbox instead of being queued."""
        _, domain = split(address)
        domain = to_ascii_domain(domain)
        if is_local_domain is not None and is_local_domain(domain):
            return True
        if not domain or domain in LOOPBACK_NAMES or domain.endswith(".localhost"):
            return False
        if "." not in domain:
            return False
        return domain != self.me

    def is_local_name(self, domain: str) -> bool:
        """Is `domain` (as to_ascii_domain gives it) a name of this host itself, qmail's
        control/locals: `me` or a loopback name? Mail to such a name that no hosted domain
        takes is local-delivery's: POSTMASTER_NAMES go to the local postmaster mailbox, any
        other name bounces. Out by MX it sat deferred for a week (a loopback name, or `me`
        where DNS had no answer) or bounced as looping (MX back to us)."""
        return domain == self.me or domain in LOOPBACK_NAMES or domain.endswith(".localhost")

    def _refresh(self, key: str, value: bytes | None) -> None:
        if key not in (ME_FILE, POSTMASTER_FILE):
            return
        text = self.control.text(key)
        parse = parse_me if key == ME_FILE else parse_postmaster
        parsed: str | None = None
        if text.strip():
            try:
                parsed = parse(text)
            except ValueError as exc:  # written around the validator (KV by hand): keep going
                log.error("control/%s ignored: %s", key, exc)
        if key == ME_FILE:
            self._me = parsed
        else:
            self._postmaster = parsed
