"""Internationalised mail (SMTPUTF8, RFC 6530-6533) through the whole platform: local parts
in either Unicode normal form, bounces of UTF-8 mail."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import smtplib
import ssl

import pytest

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.core import bus
from tests.e2e.conftest import E2E_ME, Mailyard

PASSWORD = "correct horse battery"  # noqa: S105  (the test's own mailbox)
NFC = "jos\u00e9@utf8.test"    # é as one code point, as most keyboards type it
NFD = "jose\u0301@utf8.test"   # e and a combining acute accent (macOS file names, some IMEs)


@pytest.fixture(scope="module", autouse=True)
def directory(mailyard: Mailyard) -> None:
    mailyard.cli("domain", "add", "utf8.test")
    mailyard.cli("route", "set", "remote.test", f"127.0.0.1:{mailyard.sink.port}")


def _smtp(mailyard: Mailyard) -> smtplib.SMTP:
    client = mailyard.smtp()
    client.command_encoding = "utf-8"  # smtplib's default, ascii, cannot send the names
    return client


def _no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the platform's own self-signed pair; login only
    return context


def _send(mailyard: Mailyard, recipient: str, body: bytes) -> None:
    with _smtp(mailyard) as client:
        assert client.docmd("MAIL FROM:<s\u00e9nder@client.test> SMTPUTF8")[0] == 250
        code, reply = client.docmd(f"RCPT TO:<{recipient}>")
        assert code == 250, reply
        assert client.data(body)[0] == 250


def test_a_mailbox_is_one_address_in_either_normal_form(mailyard: Mailyard) -> None:
    # created in NFD, it takes mail, logins and a second add in NFC (RFC 6530 section 10.1):
    # the NFC form was an unknown user (550 5.1.1) and could be added as a second mailbox
    out = mailyard.cli("user", "add", NFD, "--password-stdin", stdin=PASSWORD + "\n")
    assert out.strip() == f"added user {NFC}"
    again = mailyard.cli("user", "add", NFC, "--password-stdin", stdin=PASSWORD + "\n",
                         check=False)
    assert "already exists" in again
    assert len(mailyard.cli("user", "list", "utf8.test").splitlines()) == 1

    _send(mailyard, NFC, b"Subject: composed\r\n\r\nhi\r\n")
    _send(mailyard, NFD, b"Subject: decomposed\r\n\r\nhi\r\n")
    first, second = mailyard.wait_maildir(NFC, 2)
    assert f"Delivered-To: {NFC}\r\n".encode() in first
    assert b"Subject: composed" in first + second and b"Subject: decomposed" in first + second

    for login in (NFC, NFD, NFC.upper()):
        with _smtp(mailyard) as client:
            client.starttls(context=_no_verify())
            client.ehlo("client.test")
            plain = base64.b64encode(f"\0{login}\0{PASSWORD}".encode()).decode()
            code, reply = client.docmd("AUTH", f"PLAIN {plain}")
            assert code == 235, (login, reply)
    mailyard.queue_empty()


def _write_as_before_nfc(mailyard: Mailyard, kind: str, record: bytes, local: str) -> None:
    """A record under the key of its local part as given: what the directory wrote before
    it matched local parts in NFC."""
    async def put() -> None:
        nc = await bus.connect(mailyard.platform.nats.url, "test-legacy-record")
        try:
            kv = await bus.ensure_kv(nc.jetstream(), bus.KV_DIRECTORY)
            enc = [base64.urlsafe_b64encode(t.encode()).decode().rstrip("=")
                   for t in ("utf8.test", local)]
            await kv.put(f"{kind}.{enc[0]}.{enc[1]}", record)
        finally:
            await nc.close()
    asyncio.run(put())


def test_records_written_in_nfd_before_are_found_and_keep_their_maildir(
        mailyard: Mailyard) -> None:
    # Written in NFD by the code before NFC matching, under a key no lookup computes now:
    # the directory moves them to their NFC key at start, and the mailbox keeps the
    # maildir its mail is in (named in NFD on disk).
    _write_as_before_nfc(mailyard, "mailbox", dpb.Mailbox(
        address="zo\u0308e@utf8.test").SerializeToString(), "zo\u0308e")
    _write_as_before_nfc(mailyard, "alias", dpb.Alias(
        address="rene\u0301@utf8.test", targets=["zo\u0308e@utf8.test"]).SerializeToString(),
        "rene\u0301")
    mailyard.platform.restart("directory")
    listed = mailyard.cli("user", "list", "utf8.test")
    assert "z\u00f6e@utf8.test\tquota=none\tmaildir=utf8.test/zo\u0308e/Maildir" in listed
    assert "ren\u00e9@utf8.test" in mailyard.cli("alias", "list", "utf8.test")
    for recipient in ("z\u00f6e@utf8.test", "ren\u00e9@utf8.test"):
        _send(mailyard, recipient, b"Subject: found\r\n\r\nhi\r\n")
    assert len(mailyard.wait_maildir("zo\u0308e@utf8.test", 2)) == 2
    mailyard.queue_empty()


def test_a_bounce_of_utf8_mail_is_an_internationalised_dsn(mailyard: Mailyard) -> None:
    # RFC 6533: the DSN of SMTPUTF8 mail is message/global-delivery-status with the
    # returned header as message/global-headers, a recipient that is not ASCII a "utf-8;"
    # address; it was message/delivery-status with "rfc822; jörg@...", 8-bit text where
    # RFC 3464 allows ASCII only
    mailyard.sink.refuse["j\u00f6rg@remote.test"] = "550 5.1.1 nobody here"
    before = len(mailyard.sink.messages)
    with _smtp(mailyard) as client:
        assert client.docmd("MAIL FROM:<zo\u00eb@remote.test> SMTPUTF8")[0] == 250
        assert client.docmd("RCPT TO:<j\u00f6rg@remote.test>")[0] == 250
        assert client.data("Subject: Gr\u00fc\u00dfe\r\nFrom: zo\u00eb@remote.test\r\n\r\n"
                           "hi\r\n".encode())[0] == 250
    [got] = mailyard.sink.wait_for(before + 1)[before:]
    assert (got.mail_from, got.rcpt_tos) == ("<>", ["zo\u00eb@remote.test"])  # a real peer
    msg = email.message_from_bytes(got.data, policy=email.policy.default)
    assert not msg.defects
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    _, status, returned = msg.iter_parts()
    assert (status.get_content_type(), returned.get_content_type()) == (
        "message/global-delivery-status", "message/global-headers")
    # Python's parser takes a message/global-* part as an enclosed message: the status's
    # first block its header, the recipients' blocks its body
    [per_message] = status.get_payload()
    assert per_message["Reporting-MTA"] == f"dns; {E2E_ME}"
    per_recipient = email.message_from_bytes(
        per_message.get_payload(decode=True).lstrip(b"\r\n"), policy=email.policy.default)
    assert per_recipient["Final-Recipient"] == "utf-8; j\u00f6rg@remote.test"
    assert per_recipient["Status"] == "5.1.1"
    assert "nobody here" in per_recipient["Diagnostic-Code"]
    [headers] = returned.get_payload()
    assert headers["Subject"] == "Gr\u00fc\u00dfe"
    assert not any(part.defects for part in (per_message, per_recipient, headers))
    mailyard.queue_empty()
