"""ARC (RFC 8617) chain validation of incoming mail with dkimpy, for the
Authentication-Results header: a forwarder or list that broke DKIM can vouch for what it saw.

dkimpy's ARC verifier is synchronous and looks up keys itself, so it runs in a small thread
pool of its own; its key lookups are made on the event loop by the process's resolver
(authdns) and waited for in that thread. At most ARC_PENDING validations wait, beyond that
none is done. Only messages that carry an ARC-Seal pay for it. A chain longer than MAX_SETS
is "fail" without a lookup, so a message stuffed with ARC sets costs a bounded number of
lookups, and so is one with an ARC field dkimpy would not check in bounded time
(dkim_verify.checkable: its thread would hold the GIL, and the event loop with it). The
result is recorded, never acted on: DMARC's verdict stays as RFC 7489 computes it (local
ARC overrides of DMARC are a policy decision for trusted sealers, not a default).
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dkim

from mailyard.smtp_ingress.authdns import AuthDns, TempError
from mailyard.smtp_ingress.dkim_verify import ascii_text, checkable

log = logging.getLogger(__name__)
MAX_SETS = 10       # RFC 8617 allows 50; a real chain has a few hops
THREADS = 2
ARC_PENDING = 64
RESULTS = ("pass", "fail", "none", "temperror")
_FIELDS = re.compile(rb"^arc-(?:seal|message-signature|authentication-results):"
                     rb"[^\n]*(?:\n[ \t][^\n]*)*", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class ArcResult:
    result: str            # pass | fail | none | temperror (a key lookup timed out)
    ams_domain: str = ""   # the newest set's AMS d= and s=, and its seal's
    ams_selector: str = ""
    seal_domain: str = ""
    seal_selector: str = ""
    oldest_pass: int = 0   # RFC 8617 header.oldest-pass (0: every AMS verified)


def seals(lower_header: bytes) -> int:
    """How many ARC-Seal fields a lower-cased header section holds."""
    return lower_header.count(b"\narc-seal:") + lower_header.startswith(b"arc-seal:")


def fields(message: bytes) -> list[bytes]:
    """The ARC header fields of a message, whole (name, value, continuation lines)."""
    end = message.find(b"\r\n\r\n")
    return _FIELDS.findall(message, 0, end if end >= 0 else len(message))


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
        if sets > MAX_SETS or not all(map(checkable, fields(message))):
            return ArcResult("fail")
        if self.slots.locked():
            return None
        async with self.slots:
            loop = asyncio.get_running_loop()
            try:
                return await asyncio.wait_for(loop.run_in_executor(
                    self.pool, self._validate, message, loop), self.resolver.timeout * 4)
            except (TempError, TimeoutError):
                return ArcResult("temperror")
            except Exception as exc:  # a dkimpy bug must not fail the session
                log.warning("arc validation failed: %s", type(exc).__name__)
                return ArcResult("fail")

    def _validate(self, message: bytes, loop: asyncio.AbstractEventLoop) -> ArcResult:
        def key(name: bytes, timeout: float = 5) -> bytes | None:
            return asyncio.run_coroutine_threadsafe(self.resolver.dkim_key(name), loop) \
                .result(self.resolver.timeout * 2)

        cv, sets, _reason = dkim.arc_verify(message, dnsfunc=key, timeout=self.resolver.timeout)
        result = ascii_text(cv).lower()
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
        return ArcResult(result, ascii_text(newest.get("ams-domain")).lower(),
                         ascii_text(newest.get("ams-selector")),
                         ascii_text(newest.get("as-domain")).lower(),
                         ascii_text(newest.get("as-selector")), oldest_pass)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
