"""The core path: greeting, EHLO, a pipelined transaction, durable accept, Received:."""

from __future__ import annotations

from typing import Any

from ingress_helpers import Client, committed, lines_hold, session, todo_count, wait_for

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.core import bus
from mailyard.core.directory import domain_key
from mailyard.core.spool import Spool
from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.server import Ingress


async def test_ehlo_advertises_extensions(local: Ingress) -> None:
    client = await Client.connect(local.ports["smtp"])
    assert await client.reply() == R.greeting("mx.test")
    lines = (await client.cmd("EHLO client.test")).split("\n")
    assert lines == ["250-mx.test", "250-PIPELINING", "250-8BITMIME", "250-SIZE 10485760",
                     "250-STARTTLS", "250-ENHANCEDSTATUSCODES", "250 SMTPUTF8"]
    await client.close()


async def test_pipelined_transaction_replies_in_order(local: Ingress, js: Any) -> None:
    client = await session(local.ports["smtp"])
    await client.send("MAIL FROM:<sender@remote.test> BODY=8BITMIME SIZE=100\r\n"
                      "RCPT TO:<alice@example.org>\r\nRCPT TO:<nobody@example.org>\r\n"
                      "RCPT TO:<bob@example.org>\r\nDATA\r\n")
    assert await client.reply() == R.MAIL_OK
    assert await client.reply() == R.RCPT_OK
    assert await client.reply() == R.UNKNOWN_USER
    assert await client.reply() == R.RCPT_OK
    assert await client.reply() == R.GO_AHEAD
    await client.send("Subject: hi\r\n\r\n..dot\r\nbody \xe4\r\n.\r\nQUIT\r\n".encode("latin-1"))
    accepted = await client.reply()
    assert accepted.startswith("250 ok ")
    qid = accepted.split()[-1]
    assert await client.reply() == R.quit_reply("mx.test")
    paths = committed(local)
    assert len(paths) == 1 and paths[0].endswith(qid)
    envelope, data = Spool(local.settings.spool_dir).read_sync(paths[0])
    assert envelope.recipients == ["alice@example.org", "bob@example.org"]
    assert envelope.sender == "sender@remote.test" and envelope.body_8bit
    assert envelope.helo == "client.test" and envelope.client_ip == "127.0.0.1"
    assert data.startswith(b"Received: from unknown (HELO client.test) (127.0.0.1)\r\n"
                           b"  by mx.test with ESMTP id " + qid.encode() + b";\r\n")
    assert data.endswith(b"Subject: hi\r\n\r\n.dot\r\nbody \xe4\r\n")
    assert lines_hold(envelope, data) == (envelope.lines.longest, True)  # exact
    assert await todo_count(js) == 1
    await client.close()


async def test_a_quoted_local_part_that_needs_no_quotes_is_the_plain_one(local: Ingress
                                                                        ) -> None:
    """A quoted "alice"@ is alice@ (RFC 5321 4.1.2; qmail-smtpd's addrparse drops the
    quotes): it was looked up as the local part '"alice"' and refused 550 no mailbox (or
    handed to the domain's catch-all) while alice@ exists."""
    client = await session(local.ports["smtp"])
    assert await client.cmd("MAIL FROM:<sender@remote.test>") == R.MAIL_OK
    for rcpt, reply in (('"alice"@example.org', R.RCPT_OK), ('"b\\ob"@example.org', R.RCPT_OK),
                        ('"alice smith"@example.org', R.UNKNOWN_USER)):
        assert await client.cmd(f"RCPT TO:<{rcpt}>") == reply, rcpt
    assert await client.cmd("DATA") == R.GO_AHEAD
    assert (await client.cmd("Subject: hi\r\n\r\nbody\r\n.")).startswith("250 ok ")
    [path] = committed(local)
    envelope, _ = Spool(local.settings.spool_dir).read_sync(path)
    assert envelope.recipients == ["alice@example.org", "bob@example.org"]
    await client.close()


async def test_a_bounce_catch_all_refuses_unknown_users_at_rcpt(js: Any, local: Ingress
                                                                ) -> None:
    """`catchall set DOMAIN bounce` (vpopmail's default, bounce-no-mailbox) took every
    address at RCPT and bounced it from the queue: backscatter to the forged senders of all
    the spam sent to made-up names. Refused at RCPT, as chkuser and Postfix do, and as a
    domain without a catch-all; delete and deliver still take every address."""
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    for action, reply in ((dpb.CATCH_ALL_ACTION_BOUNCE, R.UNKNOWN_USER),
                          (dpb.CATCH_ALL_ACTION_DELETE, R.RCPT_OK)):
        await kv.put(domain_key("example.org"), dpb.Domain(
            name="example.org", catch_all=action).SerializeToString())
        await wait_for(lambda a=action: local.directory.domain(  # type: ignore[misc]
            "example.org").catch_all == a)
        client = await session(local.ports["smtp"])
        assert await client.cmd("MAIL FROM:<sender@remote.test>") == R.MAIL_OK
        assert await client.cmd("RCPT TO:<nobody@example.org>") == reply, action
        assert await client.cmd("RCPT TO:<alice@example.org>") == R.RCPT_OK
        await client.close()


async def test_lines_facts_of_a_line_sent_in_pieces(local: Ingress) -> None:
    """A line longer than the decoder holds (PARTIAL_MAX) is passed on in pieces; its
    length is still counted whole, so remote-delivery knows to fold it."""
    client = await session(local.ports["smtp"])
    for line in ("MAIL FROM:<sender@remote.test>", "RCPT TO:<alice@example.org>"):
        assert (await client.cmd(line)).startswith("250")
    assert await client.cmd("DATA") == R.GO_AHEAD
    long = b"y" * 20000
    await client.send(b"Subject: long\r\n\r\n" + long[:7000])
    await client.send(long[7000:] + b"\r\nshort\r\n.\r\n")
    assert (await client.reply()).startswith("250 ok ")
    [path] = committed(local)
    envelope, data = Spool(local.settings.spool_dir).read_sync(path)
    assert lines_hold(envelope, data) == (20000, False)
    assert (envelope.lines.longest, envelope.lines.leading_dot) == (20000, False)
    await client.close()


async def test_sequence_errors(local: Ingress) -> None:
    client = await Client.connect(local.ports["smtp"])
    await client.reply()
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.HELO_FIRST
    assert await client.cmd("HELO client.test") == R.helo_ok("mx.test")
    assert await client.cmd("RCPT TO:<alice@example.org>") == R.MAIL_FIRST
    assert await client.cmd("DATA") == R.MAIL_FIRST
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.MAIL_OK
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.NESTED_MAIL
    assert await client.cmd("DATA") == R.RCPT_FIRST
    assert await client.cmd("RSET") == R.FLUSHED
    assert await client.cmd("MAIL FROM:<a@b.test> SIZE=10") == R.PARAMS_NEED_EHLO
    assert await client.cmd("FOO") == R.UNIMPLEMENTED
    assert await client.cmd("NOOP") == R.OK
    assert await client.cmd("VRFY x") == R.VRFY
    assert await client.cmd("QUIT") == R.quit_reply("mx.test")
    assert await client.eof()
    assert committed(local) == []


def test_every_rejection_reason_in_the_code_is_precreated() -> None:
    """A reason used in the code but missing from REJECTION_REASONS would appear only
    after its first event; this keeps the list and the code in step."""
    import re
    from pathlib import Path

    from mailyard.smtp_ingress import metrics

    src = Path(metrics.__file__).parent
    used: set[str] = set()
    for path in src.rglob("*.py"):
        text = path.read_text()
        used |= set(re.findall(r'reject\([^()]*(?:\([^()]*\))?[^()]*,\s*"([a-z_]+)"\)', text))
        used |= set(re.findall(r'Verdict\([A-Za-z_.]+,\s*"([a-z_]+)"\)', text))
        used |= set(re.findall(r'REJECTIONS\.labels\("([a-z_]+)"\)', text))
        used |= set(re.findall(r'Close\([^()]*,\s*\n?\s*"([a-z_]+)"\)', text))
    assert used, "the patterns found no reasons at all"
    assert used <= set(metrics.REJECTION_REASONS), used - set(metrics.REJECTION_REASONS)
