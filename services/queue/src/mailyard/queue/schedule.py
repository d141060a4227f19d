"""qmail-send's retry schedule: next attempt = birth + (sqrt(age) + c)^2.

c is qmail's chanskip (20 s remote, 10 s local). The gaps grow with the message's age, so a
message deferred for days is tried every few hours, never in a tight loop. Floats, not
qmail's integer square root, so tests can use a fraction of a second for c.
"""

from __future__ import annotations

import math


def next_attempt(birth: float, now: float, c: float) -> float:
    age = max(0.0, now - birth)
    when = birth + (math.sqrt(age) + c) ** 2
    return max(when, now)


def expired(birth: float, now: float, lifetime: float) -> bool:
    """Past queuelifetime: a deferral becomes a permanent failure."""
    return now >= birth + lifetime
