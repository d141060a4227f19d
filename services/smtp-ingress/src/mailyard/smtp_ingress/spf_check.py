"""SPF (RFC 7208) with pyspf: the MAIL FROM identity, and the HELO identity (section 2.3).

pyspf is synchronous; it runs on the event loop and never waits for DNS. Its lookups are
answered from what this evaluation has fetched and the resolver's cache (authdns); the first
lookup neither has stops it (Missing), that lookup is made asynchronously, and the
evaluation starts again. Each run costs ~0.1 ms; RFC 7208's limits (10 lookups, 2 void
lookups) are pyspf's and bound the runs, and MAX_RUNS bounds them again. The whole
evaluation is bounded by AUTH_DNS_TIMEOUT x 4; past it, or on a DNS failure, the result is
temperror (tagged, never a reject).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

import spf

from mailyard.core.addresses import to_ascii_domain
from mailyard.smtp_ingress.authdns import AuthDns, Fetched, Missing

log = logging.getLogger(__name__)
RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
# 10 mechanisms with lookups, 10 MX names each with an A lookup, a few CNAMEs: a record set
# that needs more runs than this is an attack on our CPU, not mail
MAX_RUNS = 64

# pyspf checks the last label of every domain-spec in a record (a:, mx:, include: ...) with
# "[0-9a-z]*[a-z][0-9a-z]*", which tries each letter of a label as the one letter it needs:
# a sender's record naming a label of 8,000 letters held the event loop 0.8 s, one of
# 50,000 (a TXT record comes whole over TCP) half a minute. The same labels, found in one
# pass: a letter somewhere ahead, then the label.
PYSPF_TOPLAB = spf.RE_TOPLAB
spf.RE_TOPLAB = re.compile(
    r"\.(?:(?=[0-9a-z]*[a-z])[0-9a-z]+|[0-9a-z]+-[0-9a-z-]*[0-9a-z])\.?$|" + spf.PAT_CHAR,
    re.IGNORECASE)


@dataclass(frozen=True)
class SpfResult:
    result: str        # one of RESULTS
    domain: str        # the domain checked (MAIL FROM's, or HELO's for the null sender)
    identity: str      # "mailfrom" | "helo"
    explanation: str = ""


class SpfChecker:
    def __init__(self, dns: AuthDns) -> None:
        self.dns = dns
        self.timeout = dns.timeout

    async def check(self, ip: str, sender: str, helo: str) -> SpfResult:
        """SPF for MAIL FROM (postmaster@HELO for the null sender, RFC 7208 2.4)."""
        identity = "mailfrom" if sender else "helo"
        if not sender.isascii():  # SMTPUTF8: DNS and DMARC alignment need the A-label
            local, _, domain = sender.rpartition("@")
            sender = f"{local}@{to_ascii_domain(domain)}"
        domain = sender.rpartition("@")[2].lower() if sender else helo.lower()
        if not domain:
            return SpfResult("none", "", identity)
        return await self._run(ip, sender, helo, identity, domain)

    async def check_helo(self, ip: str, helo: str) -> SpfResult:
        if not helo or "." not in helo or helo.startswith("["):
            return SpfResult("none", helo.lower(), "helo")
        return await self._run(ip, "", helo, "helo", helo.lower())

    async def _run(self, ip: str, sender: str, helo: str, identity: str,
                   domain: str) -> SpfResult:
        fetched: Fetched = {}
        missed: list[tuple[str, str]] = []
        try:
            async with asyncio.timeout(self.timeout * 4):
                for _ in range(MAX_RUNS):
                    missed.clear()
                    try:
                        with self.dns.answering(fetched, missed):
                            result, explanation = self._evaluate(ip, sender, helo)
                    except Missing:
                        pass
                    else:
                        if not missed:
                            return SpfResult(result if result in RESULTS else "permerror",
                                             domain, identity, explanation)
                    # pyspf swallows some failed lookups (exp=): every miss is fetched
                    await asyncio.gather(*(self.dns.fetch(fetched, name, qtype)
                                           for name, qtype in dict.fromkeys(missed)))
        except TimeoutError:
            return SpfResult("temperror", domain, identity, "SPF evaluation timed out")
        except Exception as exc:  # a pyspf bug must not fail the session
            log.warning("spf evaluation failed: %s", type(exc).__name__)
            return SpfResult("temperror", domain, identity, "SPF evaluation failed")
        return SpfResult("temperror", domain, identity, "SPF needs too many lookups")

    def _evaluate(self, ip: str, sender: str, helo: str) -> tuple[str, str]:
        query = spf.query(i=ip, s=sender, h=helo, timeout=self.timeout,
                          querytime=self.timeout * 4)
        result, _code, explanation = query.check()
        return str(result), str(explanation)
