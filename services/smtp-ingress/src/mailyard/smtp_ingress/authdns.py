"""DNS for the sender checks (SPF, DKIM keys, DMARC, null MX), on the process's c-ares
resolver (resolver.py) with AUTH_DNS_TIMEOUT for every lookup, including those pyspf makes.

pyspf is synchronous and its lookups are recursive (include:, a:, mx:), so it never asks the
network itself: spf_lookup answers it from the answers of this evaluation (`answering`) and
the resolver's cache, and raises Missing for anything else. spf_check then makes that one
lookup asynchronously and runs the evaluation again; a repeat sender's evaluation needs no
lookup at all. No thread, no blocking of the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import spf

from mailyard.smtp_ingress.resolver import Resolver, TempError, Value

__all__ = ["AuthDns", "Missing", "TempError"]

# pyspf's record types that map onto ours; it asks nothing else today (SPF RR is gone)
SPF_TYPES = ("A", "AAAA", "MX", "PTR", "TXT")
# pyspf reads a record with patterns that, on one built for it, cost its length squared
# (macro braces left open: ten included records of 60 KB, which TCP brings whole, held the
# event loop 26 s at one MAIL FROM). RFC 7208 3.4 wants a record to fit in 512 octets; an
# SPF record past MAX_SPF_RECORD is a permerror, a longer TXT record of another kind is
# not shown to pyspf at all.
MAX_SPF_RECORD = 4096


class Missing(Exception):
    """A lookup pyspf needs that this evaluation has not made yet."""

    def __init__(self, name: str, qtype: str) -> None:
        super().__init__(name, qtype)
        self.name, self.qtype = name, qtype


# an answer of this evaluation: the values, or the TempError the lookup ended with
Fetched = dict[tuple[str, str], list[Value] | TempError]


class AuthDns:
    def __init__(self, resolver: Resolver, timeout: float) -> None:
        self.resolver = resolver
        self.timeout = timeout
        self._answers: Fetched | None = None
        self._missed: list[tuple[str, str]] = []
        # pyspf looks names up through its module-level DNSLookup; this process has one
        # resolver, so pointing it at ours is process-wide by design.
        spf.DNSLookup = self.spf_lookup

    async def lookup(self, name: str, qtype: str) -> list[Value]:
        return await self.resolver.lookup(name, qtype, self.timeout)

    async def txt(self, name: str) -> list[bytes]:
        """TXT strings of a name, each record's strings joined; [] when none.
        Raises TempError on timeout / SERVFAIL."""
        return await self.lookup(name, "TXT")

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        """(preference, exchange) pairs; the exchange of a null MX (RFC 7505) is ""."""
        return await self.lookup(domain, "MX")

    async def dkim_key(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's dnsfunc: the key record's text, or None. A timeout raises TempError
        so the signature counts as temperror, not as a missing key."""
        records = await self.txt(name.decode("ascii", "replace"))
        return records[0] if records else None

    async def fetch(self, answers: Fetched, name: str, qtype: str) -> None:
        """Make the lookup an evaluation missed, keeping its answer (or failure) in answers."""
        try:
            answers[(name, qtype)] = await self.lookup(name, qtype)
        except TempError as exc:
            answers[(name, qtype)] = exc

    @contextmanager
    def answering(self, answers: Fetched, missed: list[tuple[str, str]]) -> Iterator[None]:
        """pyspf's lookups, while in the block (synchronous, on this thread), are answered
        from `answers` and the cache; anything else is added to `missed` and raises
        Missing."""
        self._answers, self._missed = answers, missed
        try:
            yield
        finally:
            self._answers = None

    def spf_lookup(self, name: str, qtype: str, strict: object = True,
                   timeout: float = 30) -> list[tuple[tuple[str, str], object]]:
        """pyspf's DNSLookup driver (same shape as its dnspython one)."""
        if qtype not in SPF_TYPES:
            return []
        answers = self._answers
        if answers is None:  # pyspf used outside an evaluation of ours
            raise spf.TempError("DNS lookup outside an evaluation")
        found = answers.get((name, qtype))
        if found is None:
            found = self.resolver.cached(name, qtype)
        if found is None:
            self._missed.append((name, qtype))
            raise Missing(name, qtype)
        if isinstance(found, TempError):
            raise spf.TempError(f"DNS {found}")
        if qtype == "TXT":
            if any(len(v) > MAX_SPF_RECORD and v[:6].lower() == b"v=spf1" for v in found):
                raise spf.PermError(f"SPF record longer than {MAX_SPF_RECORD} octets", name)
            return [((name, qtype), (value,)) for value in found
                    if len(value) <= MAX_SPF_RECORD]
        return [((name, qtype), value) for value in found]
