"""The envelope sender of a forwarded copy (SRS, mailyard.core.srs): what postsrsd does for
Postfix. Kept as it was for a copy to our own domains, for the null sender and for senders
of our own domains (SPF passes for them as it is); rewritten for the copies that leave for
another domain, so the next hop's SPF check sees our domain and its bounces come back here
(smtp-ingress reverses them). Control `srs` `off` forwards with the original sender, as
qmail and vpopmail did; `srsdomain` names the domain to rewrite to (default: the domain of
the forwarding address, an alias domain's real domain).
"""

from __future__ import annotations

from mailyard.core import srs
from mailyard.core.control import ControlView, srs_domain
from mailyard.core.directory import DirectoryView
from mailyard.core.errors import BusError
from mailyard.core.identity import Identity
from mailyard.core.srs_keys import SrsSecrets

SRS_FILE = "srs"


def enabled(control: ControlView) -> bool:
    values = control.lines(SRS_FILE)
    return not values or values[0].lower() != "off"


class SrsSender:
    def __init__(self, directory: DirectoryView, identity: Identity, secrets: SrsSecrets
                 ) -> None:
        self.directory = directory
        self.identity = identity
        self.secrets = secrets

    def ours(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        return self.directory.is_local_domain(domain) or self.identity.is_local_name(domain)

    def needed(self, sender: str) -> bool:
        """Whether a copy to another domain gets an SRS sender (no KV read, no hash)."""
        # a quoted local part ("a b"@x) cannot sit inside another address's local part
        if not sender or "@" not in sender or '"' in sender \
                or not enabled(self.identity.control):
            return False
        return not self.ours(sender.rpartition("@")[2])

    def is_srs_domain(self, domain: str) -> bool:
        """Is `domain` control/srsdomain (the queue hands its addresses to us)?"""
        return srs_domain(self.identity.control) == domain

    async def rewrite(self, sender: str, forwarder: str) -> str:
        """The SRS sender for a copy `forwarder` (canonical) sends on. Raises BusError when
        the secrets cannot be read (the delivery defers)."""
        domain = srs_domain(self.identity.control) or \
            self.directory.real_address(forwarder).rpartition("@")[2]
        return srs.forward(sender, domain, await self._secrets())

    async def reverse(self, address: str) -> str:
        """Where mail to our SRS `address` goes (the queue's own bounce of a forwarded copy:
        one from outside was reversed by smtp-ingress at RCPT). Raises SrsError (forged,
        expired) or BusError."""
        return srs.reverse(address, await self._secrets())

    async def _secrets(self) -> list[bytes]:
        try:
            return await self.secrets.get()
        except Exception as exc:
            raise BusError(f"SRS secrets unavailable: {exc or type(exc).__name__}") from exc
