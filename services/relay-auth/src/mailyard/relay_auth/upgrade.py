"""Rehash on login: a password that matched a legacy hash (crypt(3) from vpasswd, argon2i)
or an argon2id hash with other parameters is hashed again with the platform's argon2id
and handed to the directory, which stays the one writer of mailboxes.

The directory's UpgradePasswordHash is a compare-and-swap on the hash the login matched: a
password changed in between wins, and the upgrade is dropped (FAILED_PRECONDITION). It
runs after the login was answered (the client never waits for it), at most once at a time
per mailbox; a failure is logged and retried by the next login.

A login whose password is longer than what the legacy hash read (DES: 8 characters of 7
bits, bcrypt: 72 bytes) is not upgraded: the hash matched it, but it also matches the
password the user set, which the hash cannot tell from this one. Upgrading with it made the
user's real password (and their other clients) fail from then on. Such a hash stays until
the password is changed (metric result "kept", logged with the reason).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.api.directory.v1 import directory_pb2_grpc as dgrpc
from mailyard.core import auth, password_hashes
from mailyard.relay_auth import metrics
from mailyard.relay_auth.pool import PasswordPool

log = logging.getLogger(__name__)


class HashUpgrader:
    def __init__(self, directory_addr: str, timeout: float, pool: PasswordPool,
                 token: str | None = None) -> None:
        self.channel = auth.aio_channel(directory_addr, token)  # role relayauth
        self.stub = dgrpc.DirectoryStub(self.channel)
        self.timeout = timeout
        self.pool = pool
        self._running: dict[str, asyncio.Task[None]] = {}

    def schedule(self, user: str, current_hash: str, password: str) -> None:
        if not password_hashes.reads_all(current_hash, password):
            metrics.AUTH_REHASH.labels("kept").inc()
            log.info("password hash not upgraded: the legacy scheme read only part of the "
                     "password; a new password replaces it", extra={
                         "user": user, "from": password_hashes.scheme(current_hash)})
            return
        if user in self._running:
            return
        task = asyncio.create_task(self._upgrade(user, current_hash, password),
                                   name=f"rehash-{user}")
        self._running[user] = task
        task.add_done_callback(lambda _t: self._running.pop(user, None))

    async def _upgrade(self, user: str, current_hash: str, password: str) -> None:
        try:
            new = await self.pool.run(password_hashes.hash_password, password)
            await self.stub.UpgradePasswordHash(dpb.UpgradePasswordHashRequest(
                address=user, current_hash=current_hash, new_hash=new), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                metrics.AUTH_REHASH.labels("superseded").inc()
                log.info("password hash not upgraded: changed meanwhile",
                         extra={"user": user})
                return
            metrics.AUTH_REHASH.labels("failed").inc()
            log.warning("password hash upgrade failed: %s", exc.code().name,
                        extra={"user": user})
            return
        except Exception as exc:  # pool full, directory unreachable: the next login retries
            metrics.AUTH_REHASH.labels("failed").inc()
            log.warning("password hash upgrade failed: %s", type(exc).__name__,
                        extra={"user": user})
            return
        metrics.AUTH_REHASH.labels("upgraded").inc()
        log.info("password hash upgraded to argon2id", extra={
            "user": user, "from": password_hashes.scheme(current_hash)})

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        await self.channel.close()
