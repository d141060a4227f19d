"""Queue ids: sortable by time (so listings come out oldest first) and unique across replicas."""

from __future__ import annotations

import hashlib
import os
import re
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, no I L O U
QUEUE_ID_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_queue_id(now: float | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, 26 characters."""
    ms = int((time.time() if now is None else now) * 1000)
    return _b32(ms, 10) + _b32(int.from_bytes(os.urandom(10), "big"), 16)


def derived_queue_id(base: str, *names: str) -> str:
    """A queue id made from another (`base`: a queue id, or a job id "<queue id>-<n>") and
    names: the same inputs give the same id, so a message injected again for the same reason
    (a job JetStream handed out again) is deduplicated as the same message. Its time is
    that of the queue id `base` starts with (the time part must repeat too), else 0."""
    prefix = base[:10] if is_queue_id(base[:26]) else _b32(0, 10)
    digest = hashlib.sha256("\0".join((base, *names)).encode()).digest()[:10]
    return prefix + _b32(int.from_bytes(digest, "big"), 16)


def is_queue_id(value: str) -> bool:
    return bool(QUEUE_ID_RE.fullmatch(value))


def queue_id_time(queue_id: str) -> float:
    """Seconds since the epoch encoded in a queue id."""
    ms = 0
    for ch in queue_id[:10]:
        ms = ms * 32 + ALPHABET.index(ch)
    return ms / 1000
