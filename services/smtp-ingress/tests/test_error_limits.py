"""Postfix's error limits over real SMTP: a client that makes errors (unknown commands,
syntax errors, commands out of order, refused recipients) is slowed down past
SOFT_ERROR_LIMIT and told 421 and cut at HARD_ERROR_LIMIT; junk commands (NOOP, RSET, VRFY,
HELP, HELO/EHLO) count as errors past JUNK_COMMAND_LIMIT; an accepted message forgives
them all. Before, such a client kept its connection slot until IDLE_TIMEOUT (1200 s) and
could try recipients without end (a dictionary attack)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from ingress_helpers import (
    Client,
    MakeIngress,
    committed,
    put_control,
    seed_directory,
    session,
    wait_for,
)
from prometheus_client import REGISTRY

from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.server import Ingress

CUT = R.too_many_errors("mx.test")


def cut_sessions() -> float:
    return REGISTRY.get_sample_value("mailyard_smtp_rejections_total",
                                     {"reason": "too_many_errors"}) or 0.0


async def _local(make_ingress: MakeIngress, js: Any, **settings: Any) -> Ingress:
    ingress = await make_ingress(**settings)
    await seed_directory(js, "example.org", ["alice@example.org"])
    await wait_for(lambda: ingress.directory.accepts("alice@example.org"))
    return ingress


async def test_a_client_making_errors_is_cut_at_the_hard_limit(
        make_ingress: MakeIngress, js: Any, caplog: pytest.LogCaptureFixture) -> None:
    ingress = await _local(make_ingress, js, hard_error_limit=5)
    before = cut_sessions()
    client = await session(ingress.ports["smtp"])
    assert await client.cmd("XYZZY") == R.UNIMPLEMENTED
    assert await client.cmd("RCPT TO:<alice@example.org>") == R.MAIL_FIRST
    assert await client.cmd("MAIL FROM:a@b.test") == R.ADDRESS_NOT_BRACKETED
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.MAIL_OK
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.NESTED_MAIL
    with caplog.at_level(logging.INFO, logger="mailyard.smtp_ingress"):
        # the fifth error gets its own reply, then the 421, and the connection is closed
        await client.send("DATA x\r\nNOOP\r\n")
        assert await client.reply() == R.RCPT_FIRST
        assert await client.reply() == CUT
        assert await client.eof()
    assert cut_sessions() == before + 1
    assert any(r.getMessage() == "too many errors, session closed"
               and getattr(r, "errors", None) == 5 for r in caplog.records)
    assert committed(ingress) == []


async def test_refused_recipients_count_against_a_dictionary_attack(
        make_ingress: MakeIngress, js: Any) -> None:
    ingress = await _local(make_ingress, js, hard_error_limit=3)
    client = await session(ingress.ports["smtp"])
    await client.send("MAIL FROM:<a@b.test>\r\n" + "".join(
        f"RCPT TO:<{name}@example.org>\r\n"
        for name in ("root", "admin", "alice", "info", "sales")))
    assert await client.reply() == R.MAIL_OK
    assert [await client.reply() for _ in range(4)] == [
        R.UNKNOWN_USER, R.UNKNOWN_USER, R.RCPT_OK, R.UNKNOWN_USER]
    assert await client.reply() == CUT  # the fifth RCPT is never looked at
    assert await client.eof()


async def test_junk_commands_count_past_their_limit(make_ingress: MakeIngress) -> None:
    ingress = await make_ingress(junk_command_limit=5, hard_error_limit=2)
    client = await session(ingress.ports["smtp"])  # its EHLO is the first junk command
    for verb in ("NOOP", "RSET", "VRFY x", "HELP"):
        assert (await client.cmd(verb))[0] == "2", verb
    assert (await client.cmd("EHLO client.test")).startswith("250")  # error 1
    await client.send("NOOP\r\n")  # error 2: still answered, then cut
    assert await client.reply() == R.OK
    assert await client.reply() == CUT
    assert await client.eof()


async def test_an_accepted_message_forgives_the_errors(make_ingress: MakeIngress,
                                                      js: Any) -> None:
    ingress = await _local(make_ingress, js, hard_error_limit=3, junk_command_limit=2)
    client = await session(ingress.ports["smtp"])
    for _ in range(2):
        assert await client.cmd("XYZZY") == R.UNIMPLEMENTED
        assert await client.cmd("NOOP") == R.OK
        for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>"):
            assert (await client.cmd(line)).startswith("250")
        assert await client.cmd("DATA") == R.GO_AHEAD
        await client.send("Subject: x\r\n\r\nx\r\n.\r\n")
        assert (await client.reply()).startswith("250 ok ")
    assert len(committed(ingress)) == 2
    # a refused message forgives nothing
    for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>"):
        assert (await client.cmd(line)).startswith("250")
    assert await client.cmd("DATA") == R.GO_AHEAD
    await client.send("Subject: x\r\n\r\nwith a \0 inside\r\n.\r\n")
    assert await client.reply() == R.NUL_IN_DATA
    assert await client.cmd("XYZZY") == R.UNIMPLEMENTED
    await client.send("XYZZY\r\n")
    assert await client.reply() == R.UNIMPLEMENTED
    assert await client.reply() == CUT


async def test_recipients_past_the_limit_are_no_error_up_to_the_overshoot_limit(
        make_ingress: MakeIngress, js: Any) -> None:
    """A client that sends more recipients than MAX_RECIPIENTS is told 452 for the rest
    and sends them again in another transaction (RFC 5321 4.5.3.1.10): no error, or a big
    mailing would be cut and lose the recipients already accepted. Past
    RCPT_OVERSHOOT_LIMIT in one transaction they count (Postfix's overshoot limit)."""
    ingress = await _local(make_ingress, js, hard_error_limit=3, rcpt_overshoot_limit=10)
    client = await session(ingress.ports["smtp"])
    await client.send("MAIL FROM:<a@b.test>\r\n" + "RCPT TO:<alice@example.org>\r\n" * 110 +
                      "DATA\r\n")
    replies = [await client.reply() for _ in range(112)]
    assert replies == [R.MAIL_OK] + [R.RCPT_OK] * 100 + [R.TOO_MANY_RCPTS] * 10 + [R.GO_AHEAD]
    await client.send("Subject: x\r\n\r\nx\r\n.\r\n")
    assert (await client.reply()).startswith("250 ok ")
    await client.send("MAIL FROM:<a@b.test>\r\n" + "RCPT TO:<alice@example.org>\r\n" * 115)
    replies = [await client.reply() for _ in range(115)]
    assert replies == [R.MAIL_OK] + [R.RCPT_OK] * 100 + [R.TOO_MANY_RCPTS] * 13 + [CUT]
    assert await client.eof()


async def test_replies_still_come_once_they_are_delayed(make_ingress: MakeIngress,
                                                        js: Any) -> None:
    """Past SOFT_ERROR_LIMIT every reply waits ERROR_SLEEP_TIME (1 s by default; a tiny
    value here): the pipelined replies still come, in order, and the session still works."""
    ingress = await _local(make_ingress, js, soft_error_limit=1, error_sleep_time=0.01)
    client = await session(ingress.ports["smtp"])
    await client.send("XYZZY\r\nRCPT TO:<alice@example.org>\r\nMAIL FROM:<a@b.test>\r\n"
                      "RCPT TO:<nobody@example.org>\r\nRCPT TO:<alice@example.org>\r\n"
                      "DATA\r\n")
    assert [await client.reply() for _ in range(6)] == [
        R.UNIMPLEMENTED, R.MAIL_FIRST, R.MAIL_OK, R.UNKNOWN_USER, R.RCPT_OK, R.GO_AHEAD]
    await client.send("Subject: x\r\n\r\nx\r\n.\r\n")
    assert (await client.reply()).startswith("250 ok ")
    assert await client.cmd("QUIT") == R.quit_reply("mx.test")


async def test_relay_clients_are_cut_as_well(make_ingress: MakeIngress, js: Any,
                                             relay_auth: str) -> None:
    """Postfix exempts nobody from the hard limit: a relay client (or an AUTH user) that
    makes errors is broken, or hostile, and holds a slot all the same. A client refused
    relaying (553) is counted as one refused a mailbox is."""
    await put_control(js, "tcp.smtp", '127.0.0.1:allow,RELAYCLIENT=""\n127.0.0.2:allow\n')
    ingress = await _local(make_ingress, js, hard_error_limit=2, relay_auth_addr=relay_auth,
                           relay_auth_timeout=2.0)
    view = ingress.relay_view
    await wait_for(lambda: getattr(view.decide("127.0.0.1"), "allow_relay", False))
    for source, accepted, last, refused in (
            ("127.0.0.1", "x@elsewhere.test", "XYZZY", R.UNIMPLEMENTED),
            ("127.0.0.2", "alice@example.org", "RCPT TO:<x@elsewhere.test>", R.RCPTHOSTS)):
        reader, writer = await asyncio.open_connection("127.0.0.1", ingress.ports["smtp"],
                                                       local_addr=(source, 0))
        client = Client(reader, writer)
        assert (await client.reply()).startswith("220 ")
        assert (await client.cmd("EHLO client.test")).startswith("250")
        assert await client.cmd("MAIL FROM:<a@b.test>") == R.MAIL_OK
        assert await client.cmd(f"RCPT TO:<{accepted}>") == R.RCPT_OK  # .1 may relay
        assert await client.cmd("RCPT TO:<nobody@example.org>") == R.UNKNOWN_USER
        await client.send(f"{last}\r\n")
        assert await client.reply() == refused
        assert await client.reply() == CUT
        assert await client.eof()
