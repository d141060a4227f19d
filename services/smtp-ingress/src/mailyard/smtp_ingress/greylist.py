"""Greylisting in the spirit of qmail's spamcontrol (and Postgrey): the first attempt of an
unknown (client network, sender, recipient) triplet gets 451; a retry after the minimum
delay is let through and the triplet remembered, so real MTAs (which retry) pass and
fire-and-forget senders do not.

State lives in the NATS KV bucket "greylist" so every ingress replica agrees: key = a hash
of the triplet (no address in a key name), value = "<state> <first seen> <last pass>".
The bucket's TTL (TRIPLET_TTL, 36 days) forgets remembered triplets unused that long; one
is written again at most once a day to stay alive. A pending triplet is written with a TTL
of its own, RETRY_WINDOW, as postgrey forgets one never retried: nearly every triplet of a
spam run is tried once, and kept 36 days they filled the bucket. One retried too late (or
whose TTL the server has not run yet) starts over. The client's /24 (IPv4) or /64 (IPv6)
stands for the client, as big senders retry from another address of the same farm; the
sender is the one behind its SRS, BATV and VERP rewriting (greylist_sender.py). If KV
cannot be reached the mail is let through (greylisting is an optimisation, never a reason
to lose mail), counted as "error". A bucket found deleted is made again in the background (as
the mail streams heal), the mail let through meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoStreamResponseError

from mailyard.core import bus
from mailyard.smtp_ingress.greylist_sender import key_sender

log = logging.getLogger(__name__)
TRIPLET_TTL = 36 * 86400.0
RETRY_WINDOW = 86400.0        # a pending triplet must be retried within this
REFRESH = 86400.0             # rewrite a remembered triplet at most this often
REOPEN_TIMEOUT = 10.0         # one attempt to make a deleted bucket again
OUTCOMES = ("new", "early", "passed", "known", "exempt", "error")


def client_network(ip: str) -> str:
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def triplet_key(ip: str, sender: str, recipient: str) -> str:
    text = f"{client_network(ip)}\0{key_sender(sender)}\0{recipient.lower()}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def exempt(ip: str, networks: list[str]) -> bool:
    address = ipaddress.ip_address(ip)
    for line in networks:
        try:
            if address in ipaddress.ip_network(line.split()[0], strict=False):
                return True
        except ValueError:
            continue   # a bad line in control/greylistexempt exempts nobody
    return False


class Greylist:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.kv: Any = None
        self.clock = clock
        self._js: Any = None
        self._reopening: asyncio.Task[None] | None = None

    async def start(self, js: Any) -> None:
        self._js = js
        self.kv = await bus.ensure_kv(js, bus.KV_GREYLIST, ttl=TRIPLET_TTL, msg_ttl=True)

    def close(self) -> None:
        if self._reopening is not None:
            self._reopening.cancel()

    def _reopen(self) -> None:
        """Make the bucket again, once at a time, never in the session's way: unanswered
        (no stream serves it), every lookup failed until a restart, greylisting off."""
        if self._js is None or (self._reopening is not None and not self._reopening.done()):
            return
        self._reopening = asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        try:
            self.kv = await asyncio.wait_for(
                bus.ensure_kv(self._js, bus.KV_GREYLIST, ttl=TRIPLET_TTL, msg_ttl=True),
                REOPEN_TIMEOUT)
            log.warning("greylist bucket was gone: made again")
        except Exception as exc:
            log.warning("greylist bucket could not be made again: %s", exc)

    async def check(self, ip: str, sender: str, recipient: str, delay: float) -> str:
        """One of OUTCOMES; "new" and "early" mean 451."""
        if self.kv is None:
            return "error"
        if not self._js._nc.is_connected:
            # a lookup would wait out its timeout (5 s) at every RCPT: let through now
            log.warning("greylist lookup skipped: not connected to NATS")
            return "error"
        key = triplet_key(ip, sender, recipient)
        now = self.clock()
        try:
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                try:
                    await self.kv.create(key, f"pending {now:.0f} 0".encode(),
                                         msg_ttl=RETRY_WINDOW)
                    return "new"
                except KeyWrongLastSequenceError:   # another replica was first
                    entry = await self.kv.get(key)
            state, first, last = _parse(entry.value)
            if state == "pass":
                if now - last > REFRESH:
                    await self.kv.put(key, f"pass {first:.0f} {now:.0f}".encode())
                return "known"
            if now - first > RETRY_WINDOW:
                # KeyValue.update() takes no TTL (nats-py 2.16); _update is what it calls
                await self.kv._update(key, f"pending {now:.0f} 0".encode(),
                                      last=entry.revision, msg_ttl=RETRY_WINDOW)
                return "new"
            if now - first < delay:
                return "early"
            await self.kv.put(key, f"pass {first:.0f} {now:.0f}".encode())
            return "passed"
        except Exception as exc:  # KV down, a race lost twice: let the mail through
            log.warning("greylist lookup failed: %s", type(exc).__name__)
            if isinstance(exc, NoStreamResponseError):
                self._reopen()
            return "error"


def _parse(value: bytes | None) -> tuple[str, float, float]:
    try:
        state, first, last = (value or b"").decode().split()
        return state, float(first), float(last)
    except ValueError:
        return "pending", 0.0, 0.0    # unreadable: start over
