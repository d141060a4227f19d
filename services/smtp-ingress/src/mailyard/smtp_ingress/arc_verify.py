"""ARC (RFC 8617) chain validation of incoming mail with dkimpy, for the
Authentication-Results header: a forwarder or list that broke DKIM can vouch for what it saw.

dkimpy's ARC verifier is synchronous and looks up keys itself, so it runs in a small thread
pool of its own with the synchronous resolver (authdns), like pyspf; at most ARC_PENDING
validations wait, beyond that none is done. Only messages that carry an ARC-Seal pay for
it. A chain longer than MAX_SETS is "fail" without a lookup, so a message stuffed with ARC
sets costs a bounded number of lookups. The result is recorded, never acted on: DMARC's
verdict stays as RFC 7489 computes it (local ARC overrides of DMARC are a policy decision
for trusted sealers, not a default).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dkim

from mailyard.smtp_ingress.authdns import AuthDns, TempError

log = logging.getLogger(__name__)
MAX_SETS = 10       # RFC 8617 allows 50; a real chain has a few hops
THREADS = 2
ARC_PENDING = 64
RESULTS = ("pass", "fail", "none", "temperror")


@dataclass(frozen=True)
class ArcResult:
    result: str            # pass | fail | none | temperror (a key lookup timed out)
    sets: int = 0          # ARC sets on the message (i= of the newest)
    ams_domain: str = ""   # the newest set's AMS d= and s=, and its seal's
    ams_selector: str = ""
    seal_domain: str = ""
    seal_selector: str = ""
    oldest_pass: int = 0   # RFC 8617 header.oldest-pass (0: every AMS verified)


def _text(value: object) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")


def seals(header: bytes) -> int:
    """How many ARC-Seal fields a header section holds."""
    return sum(1 for line in header.lower().split(b"\n") if line.startswith(b"arc-seal:"))


class ArcVerifier:
    def __init__(self, resolver: AuthDns) -> None:
        self.resolver = resolver
        self.pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="arc")
        self.slots = asyncio.Semaphore(ARC_PENDING)

    async def verify(self, message: bytes, sets: int) -> ArcResult | None:
        """The chain's result; None when the message has no ARC set or too many
        validations are waiting (nothing is then said about ARC)."""
        if sets == 0:
            return None
        if sets > MAX_SETS:
            return ArcResult("fail", sets)
        if self.slots.locked():
            return None
        async with self.slots:
            loop = asyncio.get_running_loop()
            try:
                return await asyncio.wait_for(loop.run_in_executor(
                    self.pool, self._validate, message), self.resolver.timeout * 4)
            except (TempError, TimeoutError):
                return ArcResult("temperror", sets)
            except Exception as exc:  # a dkimpy bug must not fail the session
                log.warning("arc validation failed: %s", type(exc).__name__)
                return ArcResult("fail", sets)

    def _validate(self, message: bytes) -> ArcResult:
        cv, sets, _reason = dkim.arc_verify(message, dnsfunc=self.resolver.dkim_key_sync,
                                            timeout=self.resolver.timeout)
        result = _text(cv).lower()
        if result not in RESULTS:
            result = "fail"
        newest = sets[0] if sets else {}
        # newest first: the oldest instance from which every AMS up to the newest
        # verifies; 0 when all of them do (RFC 8617 section 4.2.1's header.oldest-pass)
        oldest_pass = 0
        for s in sets:
            if not s.get("ams-valid"):
                oldest_pass = int(s.get("instance") or 0) + 1
                break
        return ArcResult(result, len(sets), _text(newest.get("ams-domain")).lower(),
                         _text(newest.get("ams-selector")), _text(newest.get("as-domain")).lower(),
                         _text(newest.get("as-selector")), oldest_pass)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
