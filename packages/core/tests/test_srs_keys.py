"""The SRS secrets in KV (mailyard.core.srs_keys) on a real nats-server: made once at first
use however many processes ask at the same time, kept, and rotated by putting a new line in
front while addresses made under the old one still reverse."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from mailyard.core import bus, srs, srs_keys
from mailyard.core.srs_keys import SrsSecrets


async def test_one_secret_for_every_process_and_rotation(js: Any) -> None:
    first = await asyncio.gather(*(SrsSecrets(js).get() for _ in range(5)))
    assert all(s == first[0] for s in first) and len(first[0]) == 1
    assert len(first[0][0]) == srs_keys.SECRET_BYTES
    assert await SrsSecrets(js).get() == first[0]  # kept, not made again
    address = srs.forward("joe@paypal.test", "fwd.test", first[0])

    kv = await bus.ensure_kv(js, bus.KV_SRS)
    old = (await kv.get(srs_keys.KEY)).value or b""
    await kv.put(srs_keys.KEY, base64.b64encode(b"n" * 32) + b"\nnot base64!\n" + old)
    rotated = await SrsSecrets(js).get()
    assert rotated == [b"n" * 32, first[0][0]]  # the junk line is skipped
    assert srs.forward("joe@paypal.test", "fwd.test", rotated) != address
    assert srs.reverse(address, rotated) == "joe@paypal.test"
