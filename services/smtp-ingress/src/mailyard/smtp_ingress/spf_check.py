"""SPF (RFC 7208) with pyspf: the MAIL FROM identity, and the HELO identity (section 2.3).

pyspf is synchronous, so evaluations run in a thread pool of SPF_THREADS; at most
SPF_PENDING may wait for it, beyond that the result is temperror (tagged, never a reject),
so a flood of new connections cannot queue unbounded work. RFC 7208's limits (10 lookups,
2 void lookups) are pyspf's; the whole evaluation is bounded by AUTH_DNS_TIMEOUT x 4.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass

import spf

from mailyard.smtp_ingress.authdns import CacheMiss

log = logging.getLogger(__name__)
RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")


@dataclass(frozen=True)
class SpfResult:
    result: str        # one of RESULTS
    domain: str        # the domain checked (MAIL FROM's, or HELO's for the null sender)
    identity: str      # "mailfrom" | "helo"
    explanation: str = ""


class SpfChecker:
    def __init__(self, threads: int, pending: int, timeout: float,
                 from_cache: Callable[[], AbstractContextManager[None]] | None = None) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="spf")
        self.slots = asyncio.Semaphore(pending)
        self.timeout = timeout
        # AuthDns.from_cache: an evaluation whose lookups are all in the resolver's cache
        # (repeat senders, the HELO of a known client) runs on the event loop; handing it
        # to the pool and back cost more CPU than the evaluation itself (bench.sender_auth:
        # two evaluations 0.2 ms inline, 0.65-0.9 ms through the pool)
        self.from_cache = from_cache

    async def check(self, ip: str, sender: str, helo: str) -> SpfResult:
        """SPF for MAIL FROM (postmaster@HELO for the null sender, RFC 7208 2.4)."""
        identity = "mailfrom" if sender else "helo"
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
        if self.from_cache is not None:
            try:
                with self.from_cache():
                    result, explanation = self._evaluate(ip, sender, helo)
                return SpfResult(result if result in RESULTS else "permerror", domain,
                                 identity, explanation)
            except CacheMiss:
                pass  # a lookup needs the network: in the pool, off the event loop
            except Exception as exc:  # a pyspf bug must not fail the session
                log.warning("spf evaluation failed: %s", type(exc).__name__)
                return SpfResult("temperror", domain, identity, "SPF evaluation failed")
        if self.slots.locked():
            return SpfResult("temperror", domain, identity, "too many SPF checks waiting")
        async with self.slots:
            loop = asyncio.get_running_loop()
            try:
                result, explanation = await asyncio.wait_for(loop.run_in_executor(
                    self.pool, self._evaluate, ip, sender, helo), self.timeout * 4)
            except TimeoutError:
                return SpfResult("temperror", domain, identity, "SPF evaluation timed out")
            except Exception as exc:  # a pyspf bug must not fail the session
                log.warning("spf evaluation failed: %s", type(exc).__name__)
                return SpfResult("temperror", domain, identity, "SPF evaluation failed")
        return SpfResult(result if result in RESULTS else "permerror", domain, identity,
                         explanation)

    def _evaluate(self, ip: str, sender: str, helo: str) -> tuple[str, str]:
        query = spf.query(i=ip, s=sender, h=helo, timeout=self.timeout,
                          querytime=self.timeout * 4)
        result, _code, explanation = query.check()
        return str(result), str(explanation)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
