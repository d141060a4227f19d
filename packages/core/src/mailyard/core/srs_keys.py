"""The SRS secrets (mailyard.core.srs), shared by local-delivery (which rewrites forwards'
senders) and smtp-ingress (which reverses bounces to them), in KV bucket `srs`, key
`secrets`: base64 secrets, one a line, newest first.

There is no default secret: the first service that needs one makes 32 random octets and
creates the key (KV create: the first writer wins, everyone else reads the winner's), as
`mailyard dkim keygen` makes a key and nothing ships one. Rotation: put a new line in
front; addresses made under the old one are accepted until it is removed (21 days later).

Read once and kept for REFRESH seconds: a forward or an SRS bounce costs one dict lookup,
not a KV read; mail that is neither never opens the bucket.

The list cookies' secrets (mailyard.core.listcookie: the directory checks what
local-delivery makes) are kept the same way in bucket `listcookies` (list_cookie_secrets).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import time

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from mailyard.core import bus

log = logging.getLogger(__name__)

KEY = "secrets"
SECRET_BYTES = 32
REFRESH = 60.0   # seconds a read is trusted: a rotation reaches every process within it
TIMEOUT = 5.0    # seconds the bucket may take before the caller defers (451 / a retry)


def parse(raw: bytes) -> list[bytes]:
    out = []
    for line in raw.decode("ascii", "replace").split():
        try:
            out.append(base64.b64decode(line, validate=True))
        except (binascii.Error, ValueError):
            log.warning("a line of a KV secrets key is not base64; skipped")
    return [s for s in out if s]


class SrsSecrets:
    def __init__(self, js: JetStreamContext, bucket: str = bus.KV_SRS) -> None:
        self.js = js
        self.bucket = bucket
        self._secrets: list[bytes] = []
        self._read_at = -REFRESH
        self._lock = asyncio.Lock()

    async def get(self) -> list[bytes]:
        """The secrets, newest first, made if there are none. Raises TimeoutError or a
        NATS error when the bucket cannot be reached: the caller defers."""
        if self._secrets and time.monotonic() - self._read_at < REFRESH:
            return self._secrets
        async with self._lock, asyncio.timeout(TIMEOUT):
            if not (self._secrets and time.monotonic() - self._read_at < REFRESH):
                self._secrets = await self._load()
                self._read_at = time.monotonic()
        return self._secrets

    async def _load(self) -> list[bytes]:
        kv = await bus.ensure_kv(self.js, self.bucket)
        try:
            entry = await kv.get(KEY)
            secrets = parse(entry.value or b"")
            if secrets:
                return secrets
        except KeyNotFoundError:
            pass
        fresh = base64.b64encode(os.urandom(SECRET_BYTES)) + b"\n"
        try:
            await kv.create(KEY, fresh)
            log.info("made a new secret (KV %s/secrets)", self.bucket)
            return parse(fresh)
        except KeyWrongLastSequenceError:  # another process made it first, or a blank key
            entry = await kv.get(KEY)
            secrets = parse(entry.value or b"")
            if not secrets:
                raise RuntimeError(f"KV {self.bucket}/secrets holds no secret") from None
            return secrets


def list_cookie_secrets(js: JetStreamContext) -> SrsSecrets:
    return SrsSecrets(js, bus.KV_LIST_COOKIES)
