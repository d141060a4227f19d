"""Greylisting in the spirit of qmail's spamcontrol (and Postgrey): the first attempt of an
unknown (client network, sender, recipient) triplet gets 451; a retry after the minimum
delay is let through and the triplet remembered, so real MTAs (which retry) pass and
fire-and-forget senders do not.

State lives in the NATS KV bucket "greylist" so every ingress replica agrees: key = a hash
of the triplet (no address in a key name), value = "<state> <first seen> <last pass>".
The bucket's TTL (TRIPLET_TTL, 36 days) forgets triplets unused that long; a remembered
triplet is written again at most once a day to stay alive. A pending triplet not retried
within RETRY_WINDOW starts over. The client's /24 (IPv4) or /64 (IPv6) stands for the
client, as big senders retry from another address of the same farm. If KV cannot be
reached the mail is let through (greylisting is an optimisation, never a reason to lose
mail), counted as "error".
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from mailyard.core import bus

log = logging.getLogger(__name__)
TRIPLET_TTL = 36 * 86400.0
RETRY_WINDOW = 86400.0        # a pending triplet must be retried within this
REFRESH = 86400.0             # rewrite a remembered triplet at most this often
OUTCOMES = ("new", "early", "passed", "known", "exempt", "error")


def client_network(ip: str) -> str:
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def triplet_key(ip: str, sender: str, recipient: str) -> str:
    text = f"{client_network(ip)}\0{sender.lower()}\0{recipient.lower()}"
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

    async def start(self, js: Any) -> None:
        self.kv = await bus.ensure_kv(js, bus.KV_GREYLIST, ttl=TRIPLET_TTL)

    async def check(self, ip: str, sender: str, recipient: str, delay: float) -> str:
        """One of OUTCOMES; "new" and "early" mean 451."""
        if self.kv is None:
            return "error"
        key = triplet_key(ip, sender, recipient)
        now = self.clock()
        try:
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                try:
                    await self.kv.create(key, f"pending {now:.0f} 0".encode())
                    return "new"
                except KeyWrongLastSequenceError:   # another replica was first
                    entry = await self.kv.get(key)
            state, first, last = _parse(entry.value)
            if state == "pass":
                if now - last > REFRESH:
                    await self.kv.put(key, f"pass {first:.0f} {now:.0f}".encode())
                return "known"
            if now - first > RETRY_WINDOW:
                await self.kv.update(key, f"pending {now:.0f} 0".encode(), last=entry.revision)
                return "new"
            if now - first < delay:
                return "early"
            await self.kv.put(key, f"pass {first:.0f} {now:.0f}".encode())
            return "passed"
        except Exception as exc:  # KV down, a race lost twice: let the mail through
            log.warning("greylist lookup failed: %s", type(exc).__name__)
            return "error"


def _parse(value: bytes | None) -> tuple[str, float, float]:
    try:
        state, first, last = (value or b"").decode().split()
        return state, float(first), float(last)
    except ValueError:
        return "pending", 0.0, 0.0    # unreadable: start over
