"""The content scanner against a real, private rspamd on loopback: GTUBE is refused, a clean
message gets X-Spamd-Result, a stopped or silent rspamd lets mail through (counted). The
same rspamd is the second DKIM verifier of what our signer produces (RSA and Ed25519)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ingress_helpers import MakeIngress, lines_hold, put_control, session, wait_for

from mailyard.core.dkim_sign import Signer, sign
from mailyard.core.dkimkeys import KeyDir
from mailyard.core.spool import Spool
from mailyard.smtp_ingress.metrics import SCANNER
from mailyard.smtp_ingress.server import Ingress
from mailyard.testing import DnsServer
from mailyard.testing.rspamd import Rspamd

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture(scope="module")
def rspamd_dns() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory, rspamd_dns: DnsServer) -> Iterator[Rspamd]:
    if not Rspamd.available():
        if os.environ.get("CI") == "true":
            pytest.fail("rspamd is not installed (.ci/run installs Debian's rspamd)")
        pytest.skip("rspamd is not installed (apt-get install rspamd)")
    server = Rspamd(tmp_path_factory.mktemp("rspamd"), rspamd_dns.port).start()
    yield server
    server.cleanup()


def spooled(ingress: Ingress) -> list[bytes]:
    spool = Spool(ingress.settings.spool_dir)
    stored = [spool.read_sync(p) for p in spool.iter_committed()]
    for envelope, data in stored:  # also after the scanner's Subject: rewrite
        lines_hold(envelope, data)
    return [data for _, data in stored]


async def send(ingress: Ingress, message: str) -> str:
    client = await session(ingress.ports["smtp"])
    try:
        assert await client.cmd("MAIL FROM:<a@sender.test>") == "250 2.1.0 ok"
        assert await client.cmd("RCPT TO:<bob@example.org>") == "250 2.1.5 ok"
        assert await client.cmd("DATA") == "354 go ahead"
        return await client.cmd(message + "\r\n.")
    finally:
        await client.close()


def count(action: str) -> float:
    return float(SCANNER.labels(action)._value.get())


async def test_scanner_actions_and_failing_open(make_ingress: MakeIngress, js: Any,
                                                rspamd: Rspamd) -> None:
    await put_control(js, "rcpthosts", "example.org\n")
    await put_control(js, "rspamd", rspamd.url + "\n")
    ingress = await make_ingress(rspamd_timeout=30.0)
    await wait_for(lambda: ingress.in_rcpthosts("example.org")
                   and bool(ingress.control.lines("rspamd")))
    rejected = count("reject")
    reply = await send(ingress, f"From: a@sender.test\r\nSubject: test\r\n\r\n{GTUBE}")
    assert reply == "554 5.7.1 sorry, this message looks like spam"
    assert count("reject") == rejected + 1 and spooled(ingress) == []

    clean = ("From: a@sender.test\r\nTo: bob@example.org\r\nSubject: lunch\r\n"
             "Date: Thu, 03 Dec 2026 12:00:00 +0000\r\nMessage-ID: <1@sender.test>\r\n\r\n"
             "Shall we meet at noon?")
    assert (await send(ingress, clean)).startswith("250 ok")
    [message] = spooled(ingress)
    assert b"\r\nX-Spamd-Result: default: False [" in message
    assert b"Shall we meet at noon?" in message

    # rspamd stopped: accepted unscanned, counted
    errors = count("error")
    rspamd.stop()
    assert (await send(ingress, clean)).startswith("250 ok")
    assert count("error") == errors + 1
    assert sum(b"X-Spamd-Result" in m for m in spooled(ingress)) == 1
    rspamd.start()


async def test_silent_scanner_times_out_and_mail_goes_through(make_ingress: MakeIngress,
                                                              js: Any) -> None:
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await put_control(js, "rcpthosts", "example.org\n")
    await put_control(js, "rspamd", f"http://127.0.0.1:{port}\n")
    ingress = await make_ingress(rspamd_timeout=0.5)
    await wait_for(lambda: ingress.in_rcpthosts("example.org")
                   and bool(ingress.control.lines("rspamd")))
    timeouts = count("timeout")
    assert (await send(ingress, "Subject: x\r\n\r\nbody")).startswith("250 ok")
    assert count("timeout") == timeouts + 1
    server.close()
    for writer in held:
        writer.close()


async def test_rspamd_verifies_our_signatures(rspamd: Rspamd, rspamd_dns: DnsServer,
                                              tmp_path: Path) -> None:
    folder = KeyDir(tmp_path / "dkim")
    folder.create("example.com", "rsa1", "rsa")
    folder.create("example.com", "ed1", "ed25519")
    rspamd_dns.publish_dkim(folder)
    message = (b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\n"
               b"Subject: signed\r\nDate: Thu, 03 Dec 2026 18:00:00 +0000\r\n"
               b"Message-ID: <2@example.com>\r\n\r\nHello  there\r\n\r\n")
    keys = Signer(folder.path).keys_for_message(message)
    signed = sign(message, keys) + message
    async with httpx.AsyncClient(timeout=60) as http:
        answer = (await http.post(rspamd.url + "/checkv2", content=signed, headers={
            "IP": "192.0.2.1", "From": "alice@example.com"})).json()
        symbols = answer["symbols"]
        assert "R_DKIM_ALLOW" in symbols, " ".join(sorted(symbols))
        assert sorted(symbols["R_DKIM_ALLOW"]["options"]) == \
            ["example.com:s=ed1", "example.com:s=rsa1"]
        assert "R_DKIM_REJECT" not in symbols
        # and it is a real check: a changed body fails there too
        broken = signed.replace(b"Hello", b"Hullo")
        answer = (await http.post(rspamd.url + "/checkv2", content=broken)).json()
        assert "R_DKIM_REJECT" in answer["symbols"]
