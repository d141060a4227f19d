"""Bad input is refused with an exact reply and nothing is spooled or published."""

from __future__ import annotations

from typing import Any

from ingress_helpers import committed, put_control, session, todo_count, wait_for

from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.server import Ingress


async def _nothing(ingress: Ingress, js: Any) -> None:
    assert committed(ingress) == []
    assert await todo_count(js) == 0


async def test_bare_lf_and_cr_in_commands(local: Ingress, js: Any) -> None:
    client = await session(local.ports["smtp"])
    await client.send("MAIL FROM:<a@b.test>\n")
    assert await client.reply() == R.BARE_LF_COMMAND
    await client.send("MAIL FROM:<a@b.test>\rRCPT TO:<alice@example.org>\r\n")
    assert await client.reply() == R.BARE_LF_COMMAND
    assert await client.cmd("RCPT TO:<alice@example.org>") == R.MAIL_FIRST
    await _nothing(local, js)


async def test_bare_lf_in_data_is_refused_and_closed(local: Ingress, js: Any) -> None:
    for body in (b"Subject: x\r\n\r\nsmuggled\n.\nMAIL FROM:<x@y>\r\n.\r\n",
                 b"Subject: x\r\n\r\nbare\rCR\r\n.\r\n"):
        client = await session(local.ports["smtp"])
        for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>"):
            assert (await client.cmd(line)).startswith("250")
        assert await client.cmd("DATA") == R.GO_AHEAD
        await client.send(body)
        assert await client.reply() == R.BARE_LF_DATA
        assert await client.eof()
    await _nothing(local, js)


async def test_address_syntax(local: Ingress, js: Any) -> None:
    client = await session(local.ports["smtp"])
    assert await client.cmd("MAIL FROM:<a\0b@b.test>") == R.NUL_IN_COMMAND
    assert await client.cmd("MAIL FROM:a@b.test") == R.ADDRESS_NOT_BRACKETED
    assert await client.cmd("MAIL FROM:<j\u00f6rg@b.test>") == \
        R.NON_ASCII
    assert await client.cmd("MAIL FROM:<a@b.test> FOO=1") == R.unsupported_parameter("FOO")
    assert await client.cmd("MAIL FROM:<a..b@b.test>") == R.BAD_ADDRESS
    assert await client.cmd("MAIL FROM:<j\u00f6rg@b.test> SMTPUTF8") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<alice@example.org> NOTIFY=NEVER") == \
        R.RCPT_PARAMETER
    assert await client.cmd("RCPT TO:<alice@example.org>") == R.RCPT_OK
    await client.send("DATA\r\n")
    assert await client.reply() == R.GO_AHEAD
    await client.send("Subject: utf8\r\n\r\nx\r\n.\r\n")
    assert (await client.reply()).startswith("250 ok ")
    assert len(committed(local)) == 1


async def test_a_domain_is_checked_in_one_pass(local: Ingress, js: Any) -> None:
    # the domain pattern let a label end anywhere (the dot after it was optional), so a
    # name that fails at its end was tried in every way of cutting it into labels: 20
    # letters and a "!" held the event loop for 12 s, and one MAIL FROM of 40 stopped the
    # listener for longer than anyone waits
    client = await session(local.ports["smtp"])
    for name in ("a" * 40 + "!", "a-" * 60 + "!", "ab." * 50 + "a" * 60 + "!"):
        assert await client.cmd(f"MAIL FROM:<x@{name}>") == R.BAD_ADDRESS
        assert await client.cmd(f"RCPT TO:<x@{name}>") == R.MAIL_FIRST
    assert await client.cmd("MAIL FROM:<x@" + "a" * 70 + ".b-c.test.>") == R.MAIL_OK
    await _nothing(local, js)


async def test_overlong_command_line(local: Ingress, js: Any) -> None:
    client = await session(local.ports["smtp"])
    await client.send("MAIL FROM:<" + "a" * 5000 + "@b.test>\r\n")
    assert await client.reply() == R.LINE_TOO_LONG
    assert await client.cmd("NOOP") == R.OK
    await _nothing(local, js)


async def test_badmailfrom(local: Ingress, js: Any) -> None:
    await put_control(js, "badmailfrom", "spammer@bad.test\n@worse.test\n")
    await wait_for(lambda: "@worse.test" in local.control.text("badmailfrom"))
    client = await session(local.ports["smtp"])
    reply = R.BADMAILFROM
    assert await client.cmd("MAIL FROM:<Spammer@BAD.test>") == reply
    assert await client.cmd("MAIL FROM:<anyone@worse.test>") == reply
    assert await client.cmd("MAIL FROM:<ok@bad.test>") == R.MAIL_OK


async def test_badmailfrom_matches_utf8_in_any_form(local: Ingress, js: Any) -> None:
    """An IDN listed in one form ("@bücher.test") let a sender in the other
    (xn--bcher-kva.test, or its UTF-8 under SMTPUTF8) through, and so did a local part in
    another Unicode normal form: entries and sender are compared as the directory keys
    them (NFC local part, A-label domain)."""
    await put_control(js, "badmailfrom", "@b\u00fccher.test\njos\u00e9@bad.test\n"
                      "@xn--caf-dma.test\n")
    await wait_for(lambda: "@xn--caf" in local.control.text("badmailfrom"))
    client = await session(local.ports["smtp"])
    for sender in ("spam@xn--bcher-kva.test", "spam@B\u00dcCHER.test SMTPUTF8",
                   "JOSE\u0301@bad.test SMTPUTF8", "spam@caf\u00e9.test SMTPUTF8"):
        address, _, param = sender.partition(" ")
        assert await client.cmd(f"MAIL FROM:<{address}> {param}".rstrip()) == \
            R.BADMAILFROM, sender
    assert await client.cmd("MAIL FROM:<jos@bad.test>") == R.MAIL_OK


async def test_databytes_at_mail_and_after_data(local: Ingress, js: Any) -> None:
    await put_control(js, "databytes", "1000\n")
    await wait_for(lambda: local.databytes() == 1000)
    client = await session(local.ports["smtp"])
    too_big = R.DATABYTES
    assert await client.cmd("MAIL FROM:<a@b.test> SIZE=1001") == too_big
    assert await client.cmd("MAIL FROM:<a@b.test> SIZE=10") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<alice@example.org>") == R.RCPT_OK
    assert await client.cmd("DATA") == R.GO_AHEAD
    await client.send(b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * 2000 + b".\r\n")
    assert await client.reply() == too_big
    assert await client.cmd("NOOP") == R.OK  # the session goes on in sync
    await _nothing(local, js)


async def test_hop_count(local: Ingress, js: Any) -> None:
    client = await session(local.ports["smtp"])
    for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>", "DATA"):
        await client.cmd(line)
    header = "".join(f"Received: from hop{i}\r\n" if i % 2 else f"Delivered-To: x{i}@y\r\n"
                     for i in range(101))
    await client.send(header + "\r\nbody\r\n.\r\n")
    assert await client.reply() == R.HOPS
    await _nothing(local, js)


async def test_recipient_limit(local: Ingress, js: Any) -> None:
    client = await session(local.ports["smtp"])
    await client.send("MAIL FROM:<a@b.test>\r\n" + "RCPT TO:<alice@example.org>\r\n" * 101)
    assert await client.reply() == R.MAIL_OK
    for _ in range(100):
        assert await client.reply() == R.RCPT_OK
    assert await client.reply() == R.TOO_MANY_RCPTS


async def test_nul_in_data_is_refused_and_the_session_goes_on(local: Ingress, js: Any) -> None:
    """The smuggling scanners' NUL lines: "\\x00." (nullbefore) and ".\\x00" (nullafter) end
    the message for a next hop that drops NULs. RFC 5322 forbids NUL: 554 5.6.0, nothing
    spooled, and the client may go on in the same session."""
    from prometheus_client import REGISTRY

    def refused() -> float:
        return REGISTRY.get_sample_value("mailyard_smtp_rejections_total",
                                         {"reason": "nul"}) or 0.0

    before = refused()
    smuggled = (b"MAIL FROM:<evil@b.test>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
                b"Subject: smuggled\r\n\r\nx\r\n")
    client = await session(local.ports["smtp"])
    for nul_line in (b"\x00.", b".\x00", b"with a \x00 inside"):
        for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>"):
            assert (await client.cmd(line)).startswith("250")
        assert await client.cmd("DATA") == R.GO_AHEAD
        await client.send(b"Subject: x\r\n\r\nhello\r\n" + nul_line + b"\r\n" + smuggled +
                          b".\r\n")
        assert await client.reply() == R.NUL_IN_DATA
    assert refused() == before + 3
    assert await client.cmd("NOOP") == R.OK
    await _nothing(local, js)
    # the same session still delivers a clean message
    for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>", "DATA"):
        await client.cmd(line)
    await client.send(b"Subject: clean\r\n\r\nok\r\n.\r\n")
    assert (await client.reply()).startswith("250 ok ")
    assert len(committed(local)) == 1
