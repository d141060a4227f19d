"""rblsmtpd: DNSBL lookups started at connect and awaited at the first RCPT, plus the
client's reverse name for the Received: line.

rblsmtpd's rules: RBLSMTPD="" in the client's rule (or a relay client) skips the lists;
RBLSMTPD="text" blocks with that text ("-text": permanently) without any lookup; otherwise
each configured zone is asked (in parallel); the first listing in configured order wins and
its TXT record is the reply text. A lookup that times out lets the client through, counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.metrics import DNSBL_HITS, DNSBL_TIMEOUTS
from mailyard.smtp_ingress.resolver import Resolver, TempError, reverse_name

if TYPE_CHECKING:
    from mailyard.core.control import ControlView
    from mailyard.smtp_ingress.session import Session
    from mailyard.smtp_ingress.settings import Settings

log = logging.getLogger(__name__)
PTR_FAILURE_LIMIT = 20_000
PTR_FAILURE_TTL = 60.0  # seconds a PTR lookup that got no answer is not repeated


@dataclass(frozen=True)
class Listing:
    zone: str
    reply: str


def query_name(ip: str, zone: str) -> str:
    """1.2.3.4 -> 4.3.2.1.<zone>; IPv6 in nibbles: the PTR name with the zone for the
    in-addr.arpa / ip6.arpa suffix."""
    return reverse_name(ip).rsplit(".", 2)[0] + "." + zone


class Dns:
    def __init__(self, settings: Settings, control: ControlView, resolver: Resolver) -> None:
        self.settings = settings
        self.control = control
        # the process's resolver: answers (NXDOMAIN too) are kept for their TTL, as MX
        # traffic comes again and again from the same senders, and a PTR or DNSBL query per
        # connection was a visible share of a connection's CPU
        self.resolver = resolver
        self._ptr_failed: dict[str, float] = {}  # ip -> monotonic time to ask again

    def start(self, s: Session) -> asyncio.Task[Listing | None] | None:
        env = dict(s.client.env) if s.client is not None else {}
        if "RBLSMTPD" in env:
            text = env["RBLSMTPD"]
            if not text:
                return None
            listing = Listing("RBLSMTPD", replies.dnsbl(text.lstrip("-"), text.startswith("-")))
            return asyncio.create_task(_const(listing))
        if s.client is not None and (s.client.allow_relay or s.client.dnsbl_exempt):
            return None
        zones = self.control.lines("dnsbl")
        if not zones:
            return None
        return asyncio.create_task(self.lookup(s.ip, zones))

    async def lookup(self, ip: str, zones: list[str]) -> Listing | None:
        try:
            names = [query_name(ip, zone.rstrip(".")) for zone in zones]
        except ValueError:
            return None
        found = await asyncio.gather(*(self._one(n, z) for n, z in zip(names, zones,
                                                                         strict=True)))
        for listing in found:
            if listing is not None:
                DNSBL_HITS.labels(listing.zone).inc()
                return listing
        return None

    async def _one(self, name: str, zone: str) -> Listing | None:
        timeout = self.settings.dnsbl_timeout
        try:
            listed = await self.resolver.lookup(name, "A", timeout)
        except TempError as exc:  # SERVFAIL and friends: not listed, like rblsmtpd
            if exc.timeout:
                DNSBL_TIMEOUTS.inc()
            else:
                log.info("dnsbl lookup in %s failed: %s", zone, exc)
            return None
        if not listed:
            return None
        text = f"listed in {zone}"
        try:
            strings = [t.decode("utf-8", "replace")
                       for t in await self.resolver.lookup(name, "TXT", timeout)]
            text = " ".join(strings) or text
        except TempError:
            pass
        return Listing(zone, replies.dnsbl(text, self.settings.dnsbl_permanent))

    def start_ptr(self, ip: str) -> asyncio.Task[str]:
        return asyncio.create_task(self._ptr(ip))

    async def _ptr(self, ip: str) -> str:
        if self._ptr_failed.get(ip, 0.0) > time.monotonic():
            return ""
        try:
            names = await self.resolver.lookup(reverse_name(ip), "PTR",
                                               self.settings.dnsbl_timeout)
        except ValueError:
            return ""
        except TempError:
            # no answer at all (timeout, SERVFAIL, no server): nothing is cached, so
            # remember the failure for a while rather than ask again at every connection
            if len(self._ptr_failed) >= PTR_FAILURE_LIMIT:
                self._ptr_failed.clear()
            self._ptr_failed[ip] = time.monotonic() + PTR_FAILURE_TTL
            return ""
        return str(names[0]) if names else ""


async def _const(listing: Listing) -> Listing:
    return listing
