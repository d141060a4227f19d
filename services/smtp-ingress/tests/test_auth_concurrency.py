"""Issue 14 item 2: AUTH under concurrency. Fifty correct AUTH PLAIN logins at the same
moment on the submission port, against the real relay-auth (child process, the platform's
argon2id parameters), all get 235: AUTH has its own deadline in smtp-ingress (not the
relay check's 0.5 s) and relay-auth queues the checks in its bounded pool. Before, five
logins at once got 454 4.7.0 on an idle machine."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from ingress_helpers import Client, MakeIngress, plain, put_control, seed_directory, wait_for

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.core import bus, password_hashes
from mailyard.core.directory import record_key

USERS = [f"user{i}@example.org" for i in range(10)]
PASSWORD = "a correct password"  # noqa: S105
LOGINS = 50


async def _login(port: int, tls: ssl.SSLContext, user: str, password: str) -> str:
    client = await Client.connect(port)
    try:
        assert (await client.reply(60)).startswith("220 ")
        assert (await client.cmd("EHLO client.test")).startswith("250")
        await client.starttls(tls)
        assert (await client.cmd("EHLO client.test")).startswith("250")
        await client.send(f"AUTH PLAIN {plain(user, password)}\r\n")
        return await client.reply(120)
    finally:
        await client.close()


async def test_fifty_concurrent_correct_logins_all_succeed(
        make_ingress: MakeIngress, js: Any, relay_auth: str,
        client_tls: ssl.SSLContext) -> None:
    await put_control(js, "tcp.smtp", "127.0.0.1:allow\n")
    await seed_directory(js, "example.org", [])
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    stored = await asyncio.to_thread(password_hashes.hash_password, PASSWORD)
    for user in USERS:
        await kv.put(record_key("mailbox", user), dpb.Mailbox(
            address=user, password_hash=stored).SerializeToString())
    ingress = await make_ingress(relay_auth_addr=relay_auth)  # relay checks: 0.5 s deadline
    await wait_for(lambda: ingress.directory.accepts(USERS[-1]))
    port = ingress.ports["submission"]
    replies = await asyncio.gather(*(
        _login(port, client_tls, USERS[i % len(USERS)], PASSWORD) for i in range(LOGINS)))
    assert replies == ["235 2.7.0 authentication successful"] * LOGINS
