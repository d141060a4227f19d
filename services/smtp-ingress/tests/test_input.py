"""Bad input is refused with an exact reply and nothing is spooled or published."""

from __future__ import annotations

from typing import Any

from ingress_helpers import committed, put_control, session, todo_count, wait_for

from mailyard.smtp_ingress.server import Ingress

BARE_CMD = "500 5.5.2 bare LF or CR in command, see https://cr.yp.to/docs/smtplf.html"
BARE_DATA = "451 4.5.2 bare LF or CR in message, see https://cr.yp.to/docs/smtplf.html"


async def _nothing(ingress: Ingress, js: Any) -> None:
    assert committed(ingress) == []
    assert await todo_count(js) == 0


async def test_bare_lf_and_cr_in_commands(local: Ingress, js: Any) -> None:
    client = await session(local.ports["smtp"])
    await client.send("MAIL FROM:<a@b.test>\n")
    assert await client.reply() == BARE_CMD
    await client.send("MAIL FROM:<a@b.test>\rRCPT TO:<alice@example.org>\r\n")
    assert await client.reply() == BARE_CMD
    assert await client.cmd("RCPT TO:<alice@example.org>") == "503 5.5.1 MAIL first"
    await _nothing(local, js)


async def test_bare_lf_in_data_is_refused_and_closed(local: Ingress, js: Any) -> None:
    for body in (b"Subject: x\r\n\r\nsmuggled\n.\nMAIL FROM:<x@y>\r\n.\r\n",
                 b"Subject: x\r\n\r\nbare\rCR\r\n.\r\n"):
        client = await session(local.ports["smtp"])
        for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>"):
            assert (await client.cmd(line)).startswith("250")
        assert await client.cmd("DATA") == "354 go ahead"
        await client.send(body)
        assert await client.reply() == BARE_DATA
        assert await client.eof()
    await _nothing(local, js)


async def test_address_syntax(local: Ingress, js: Any) -> None:
    client = await session(local.ports["smtp"])
    assert await client.cmd("MAIL FROM:<a\0b@b.test>") == "501 5.5.2 NUL in command"
    assert await client.cmd("MAIL FROM:a@b.test") == "501 5.5.4 syntax error: address must be in <>"
    assert await client.cmd("MAIL FROM:<j\u00f6rg@b.test>") == \
        "553 5.6.7 non-ASCII address requires SMTPUTF8"
    assert await client.cmd("MAIL FROM:<a@b.test> FOO=1") == "555 5.5.4 unsupported parameter FOO"
    assert await client.cmd("MAIL FROM:<a..b@b.test>") == "501 5.1.7 bad address syntax"
    assert await client.cmd("MAIL FROM:<j\u00f6rg@b.test> SMTPUTF8") == "250 2.1.0 ok"
    assert await client.cmd("RCPT TO:<alice@example.org> NOTIFY=NEVER") == \
        "555 5.5.4 unsupported RCPT parameter"
    assert await client.cmd("RCPT TO:<alice@example.org>") == "250 2.1.5 ok"
    await client.send("DATA\r\n")
    assert await client.reply() == "354 go ahead"
    await client.send("Subject: utf8\r\n\r\nx\r\n.\r\n")
    assert (await client.reply()).startswith("250 ok ")
    assert len(committed(local)) == 1


async def test_overlong_command_line(local: Ingress, js: Any) -> None:
    client = await session(local.ports["smtp"])
    await client.send("MAIL FROM:<" + "a" * 5000 + "@b.test>\r\n")
    assert await client.reply() == "500 5.5.2 line too long"
    assert await client.cmd("NOOP") == "250 2.0.0 ok"
    await _nothing(local, js)


async def test_badmailfrom(local: Ingress, js: Any) -> None:
    await put_control(js, "badmailfrom", "spammer@bad.test\n@worse.test\n")
    await wait_for(lambda: "@worse.test" in local.control.text("badmailfrom"))
    client = await session(local.ports["smtp"])
    reply = "553 5.7.1 sorry, your envelope sender is in my badmailfrom list"
    assert await client.cmd("MAIL FROM:<Spammer@BAD.test>") == reply
    assert await client.cmd("MAIL FROM:<anyone@worse.test>") == reply
    assert await client.cmd("MAIL FROM:<ok@bad.test>") == "250 2.1.0 ok"


async def test_databytes_at_mail_and_after_data(local: Ingress, js: Any) -> None:
    await put_control(js, "databytes", "1000\n")
    await wait_for(lambda: local.databytes() == 1000)
    client = await session(local.ports["smtp"])
    too_big = "552 5.3.4 sorry, that message size exceeds my databytes limit"
    assert await client.cmd("MAIL FROM:<a@b.test> SIZE=1001") == too_big
    assert await client.cmd("MAIL FROM:<a@b.test> SIZE=10") == "250 2.1.0 ok"
    assert await client.cmd("RCPT TO:<alice@example.org>") == "250 2.1.5 ok"
    assert await client.cmd("DATA") == "354 go ahead"
    await client.send(b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * 2000 + b".\r\n")
    assert await client.reply() == too_big
    assert await client.cmd("NOOP") == "250 2.0.0 ok"  # the session goes on in sync
    await _nothing(local, js)


async def test_hop_count(local: Ingress, js: Any) -> None:
    client = await session(local.ports["smtp"])
    for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>", "DATA"):
        await client.cmd(line)
    header = "".join(f"Received: from hop{i}\r\n" if i % 2 else f"Delivered-To: x{i}@y\r\n"
                     for i in range(101))
    await client.send(header + "\r\nbody\r\n.\r\n")
    assert await client.reply() == "554 5.4.6 too many hops, this message is looping"
    await _nothing(local, js)


async def test_recipient_limit(local: Ingress, js: Any) -> None:
    client = await session(local.ports["smtp"])
    await client.send("MAIL FROM:<a@b.test>\r\n" + "RCPT TO:<alice@example.org>\r\n" * 101)
    assert await client.reply() == "250 2.1.0 ok"
    for _ in range(100):
        assert await client.reply() == "250 2.1.5 ok"
    assert await client.reply() == "452 4.5.3 too many recipients"
