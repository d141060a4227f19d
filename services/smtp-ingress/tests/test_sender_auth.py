"""Mail from outside: SPF at MAIL (pass / fail / softfail / none / temperror), DKIM
verification (valid, broken, missing), DMARC with and without alignment, null MX, the
policy control files, and the one Authentication-Results header, read back with authres.
All names are served by a loopback DNS server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import authres
import authres.dmarc
import dkim
import pytest
from ingress_helpers import MakeIngress, put_control, session, wait_for

from mailyard.core.dkimkeys import KeyDir
from mailyard.core.spool import Spool
from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.metrics import AUTH_VERDICTS
from mailyard.smtp_ingress.server import Ingress
from mailyard.testing import DnsServer

ME = "mx.test"


@pytest.fixture
def zone(dns_server: DnsServer, tmp_path: Path) -> tuple[DnsServer, KeyDir]:
    d = dns_server
    d.add("pass.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
    d.add("fail.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    d.add("soft.test", "TXT", '"v=spf1 ~all"')
    d.add("none.test", "A", "192.0.2.7")           # exists, no SPF record
    d.silent.add("slow.test")                      # never answers: temperror
    d.add("helo.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
    d.add("nullmx.test", "MX", "0 .")
    d.add("_dmarc.victim.test", "TXT", '"v=DMARC1; p=reject"')
    d.add("_dmarc.pass.test", "TXT", '"v=DMARC1; p=reject"')
    d.add("_dmarc.signed.test", "TXT", '"v=DMARC1; p=reject; adkim=s"')
    d.add("_dmarc.xn--bcher-kva.test", "TXT", '"v=DMARC1; p=reject"')  # bücher.test
    d.add("_dmarc.xn--caf-dma.test", "TXT", '"v=DMARC1; p=reject"')     # café.test
    d.add("xn--caf-dma.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
    d.add("signed.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')   # SPF fails; DKIM decides
    keys = KeyDir(tmp_path / "their-keys")
    keys.create("signed.test", "sel", "rsa")
    d.publish_dkim(keys)
    return d, keys


async def _ingress(make_ingress: MakeIngress, js: Any, dns: DnsServer) -> Ingress:
    await put_control(js, "rcpthosts", "example.org\n")
    # Answers must never race the timeout: a 0.5 s bound turned fail.test's SPF fail into
    # temperror (accepted) on a loaded CI machine. Only the silent names wait it out.
    ingress = await make_ingress(sender_auth=True, dns_servers=f"127.0.0.1:{dns.port}",
                                 auth_dns_timeout=2.0)
    await wait_for(lambda: ingress.in_rcpthosts("example.org"))
    return ingress


def signed(keys: KeyDir, message: bytes) -> bytes:
    key = keys.find("signed.test", "sel")
    return dkim.sign(message, b"sel", b"signed.test", key.private,
                     canonicalize=(b"relaxed", b"relaxed")) + message


def parse_ar(message: bytes) -> authres.AuthenticationResultsHeader:
    head = message.split(b"\r\n\r\n")[0].decode()
    fields = [f for f in head.replace("\r\n\t", " ").split("\r\n")  # ours, not a hop's
              if f.lower().startswith("authentication-results:")
              and not f.lower().startswith(("authentication-results: fwd.test;",
                                            "authentication-results: slowkey.test;"))]
    assert len(fields) == 1, fields
    return authres.AuthenticationResultsHeader.parse(fields[0])


def results(header: authres.AuthenticationResultsHeader) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in header.results:
        key = r.method
        if r.method == "spf" and any(p.name == "helo" for p in r.properties):
            key = "spf_helo"
        out.setdefault(key, []).append(r.result)
    return out


async def send(ingress: Ingress, sender: str, message: bytes,
               helo: str = "EHLO helo.test") -> str:
    client = await session(ingress.ports["smtp"], helo)
    try:
        reply = await client.cmd(f"MAIL FROM:<{sender}>")
        if not reply.startswith("250"):
            return reply
        assert await client.cmd("RCPT TO:<bob@example.org>") == "250 2.1.5 ok"
        assert await client.cmd("DATA") == "354 go ahead"
        return await client.cmd(message.decode() + ".")
    finally:
        await client.close()


def last(ingress: Ingress, count: int) -> bytes:
    spool = Spool(ingress.settings.spool_dir)
    messages = sorted(spool.iter_committed(), key=lambda p: Path(p).name)  # ULIDs: by time
    assert len(messages) == count
    return spool.read_sync(messages[-1])[1]


def body(sender_domain: str, extra: str = "") -> bytes:
    return (f"From: someone@{sender_domain}\r\nTo: bob@example.org\r\nSubject: t\r\n"
            f"{extra}\r\nhello\r\n").encode()


async def test_spf_results_and_the_authentication_results_header(
        make_ingress: MakeIngress, js: Any, zone: tuple[DnsServer, KeyDir]) -> None:
    ingress = await _ingress(make_ingress, js, zone[0])
    before = AUTH_VERDICTS.labels("spf", "temperror")._value.get()
    expected = {"pass.test": "pass", "fail.test": "fail", "soft.test": "softfail",
                "none.test": "none", "slow.test": "temperror"}
    forged = f"Authentication-Results: {ME}; spf=pass smtp.mailfrom=x; dmarc=pass\r\n" \
             "Authentication-Results: upstream.test; spf=pass smtp.mailfrom=x\r\n"
    for count, (domain, result) in enumerate(expected.items(), 1):
        reply = await send(ingress, f"a@{domain}", body(domain, forged))
        assert reply.startswith("250 ok"), (domain, reply)
        message = last(ingress, count)
        # the forged header with our id is gone, the upstream one stays
        assert b"Authentication-Results: upstream.test;" in message
        header = parse_ar(message.replace(b"Authentication-Results: upstream.test; spf=pass"
                                          b" smtp.mailfrom=x\r\n", b""))
        assert header.authserv_id == ME
        found = results(header)
        assert found["spf"] == [result], (domain, str(header))
        assert found["spf_helo"] == ["pass"]
        assert found["dkim"] == ["none"]
        spf = next(r for r in header.results if r.method == "spf")
        assert [(p.type, p.name, p.value) for p in spf.properties] == \
            [("smtp", "mailfrom", domain)]
    assert AUTH_VERDICTS.labels("spf", "temperror")._value.get() - before == 1


async def test_spf_policy_reject_and_null_mx(make_ingress: MakeIngress, js: Any,
                                             zone: tuple[DnsServer, KeyDir]) -> None:
    ingress = await _ingress(make_ingress, js, zone[0])
    assert (await send(ingress, "a@nullmx.test", body("nullmx.test"))).startswith(
        "550 5.7.27 ")
    await put_control(js, "spfpolicy", "reject\n")
    await wait_for(lambda: ingress.policy_word("spfpolicy", "tag") == "reject")
    reply = await send(ingress, "a@fail.test", body("fail.test"))
    assert reply.startswith("550 5.7.23 ") and "fail.test" in reply
    # softfail and a DNS timeout are never rejected
    assert (await send(ingress, "a@soft.test", body("soft.test"))).startswith("250 ok")
    assert (await send(ingress, "a@slow.test", body("slow.test"))).startswith("250 ok")


async def test_dkim_and_dmarc(make_ingress: MakeIngress, js: Any,
                              zone: tuple[DnsServer, KeyDir]) -> None:
    ingress = await _ingress(make_ingress, js, zone[0])
    keys = zone[1]
    # valid signature, aligned (strict) with From: DMARC passes although SPF fails
    good = signed(keys, body("signed.test"))
    assert (await send(ingress, "a@signed.test", good)).startswith("250 ok")
    found = results(parse_ar(last(ingress, 1)))
    assert found["spf"] == ["fail"] and found["dkim"] == ["pass"]
    assert found["dmarc"] == ["pass"]
    # broken signature (body changed after signing): dkim=fail, DMARC fails, p=reject
    broken = good.replace(b"hello", b"HELLO")
    reply = await send(ingress, "a@signed.test", broken)
    assert reply.startswith("550 5.7.1 ") and "signed.test" in reply
    # a valid signature by another domain does not align: forged From: is refused
    forged = signed(keys, body("victim.test"))
    reply = await send(ingress, "a@fail.test", forged)
    assert reply.startswith("550 5.7.1 ") and "victim.test" in reply
    # SPF pass for an aligned MAIL FROM is enough
    assert (await send(ingress, "a@pass.test", body("pass.test"))).startswith("250 ok")
    found = results(parse_ar(last(ingress, 2)))
    assert found["dmarc"] == ["pass"] and found["dkim"] == ["none"]
    # tag only: the failure is recorded, with the domain's policy
    await put_control(js, "dmarcpolicy", "tag\n")
    await wait_for(lambda: ingress.policy_word("dmarcpolicy", "reject") == "tag")
    assert (await send(ingress, "a@signed.test", broken)).startswith("250 ok")
    header = parse_ar(last(ingress, 3))
    assert results(header)["dkim"] == ["fail"]
    dmarc = next(r for r in header.results if r.method == "dmarc")
    assert dmarc.result == "fail"
    assert ("policy", "dmarc", "reject") in [(p.type, p.name, p.value)
                                             for p in dmarc.properties]
    # a DMARC record that cannot be read in time: temperror, accepted
    zone[0].silent.add("_dmarc.soft.test")
    assert (await send(ingress, "a@soft.test", body("soft.test"))).startswith("250 ok")
    assert results(parse_ar(last(ingress, 4)))["dmarc"] == ["temperror"]


async def test_an_idn_from_domain_is_checked_by_its_a_label(
        make_ingress: MakeIngress, js: Any, zone: tuple[DnsServer, KeyDir]) -> None:
    """A UTF-8 From: (SMTPUTF8) names an IDN domain by its U-label; its DMARC record is
    under the A-label (RFC 8616): a forger writing the U-label meets the domain's p=reject
    as one writing the A-label does."""
    zone[0].add("_dmarc.xn--bcher-kva.test", "TXT", '"v=DMARC1; p=reject"')
    ingress = await _ingress(make_ingress, js, zone[0])
    for written in ("bücher.test", "BÜCHER.test", "xn--bcher-kva.test"):
        client = await session(ingress.ports["smtp"])
        assert await client.cmd("MAIL FROM:<a@pass.test> SMTPUTF8") == R.MAIL_OK
        assert await client.cmd("RCPT TO:<bob@example.org>") == R.RCPT_OK
        assert await client.cmd("DATA") == R.GO_AHEAD
        reply = await client.cmd(body(written).decode() + ".")
        assert reply.startswith("550 5.7.1 ") and "xn--bcher-kva.test" in reply, written
        await client.close()


async def test_dmarc_of_a_from_domain_in_utf8(make_ingress: MakeIngress, js: Any,
                                             zone: tuple[DnsServer, KeyDir]) -> None:
    """SMTPUTF8 mail may name its From: domain in UTF-8 (bücher.test): its DMARC record was
    looked up under that name, which no DNS holds, so mail forged From: a p=reject IDN
    passed as dmarc=none. The domain is looked up, and aligned, as its A-label, and so is
    a MAIL FROM domain in UTF-8 for SPF."""
    ingress = await _ingress(make_ingress, js, zone[0])

    async def send_utf8(sender: str, from_domain: str) -> str:
        client = await session(ingress.ports["smtp"], "EHLO helo.test")
        try:
            assert await client.cmd(f"MAIL FROM:<{sender}> SMTPUTF8") == R.MAIL_OK
            assert await client.cmd("RCPT TO:<bob@example.org>") == "250 2.1.5 ok"
            assert await client.cmd("DATA") == "354 go ahead"
            return await client.cmd(body(from_domain).decode() + ".")
        finally:
            await client.close()

    for sender, from_domain in (("a@fail.test", "b\u00fccher.test"),
                                ("a@b\u00fccher.test", "B\u00dcCHER.test")):
        reply = await send_utf8(sender, from_domain)
        assert reply.startswith("550 5.7.1 ") and "xn--bcher-kva.test" in reply, reply
    # SPF passes for the UTF-8 MAIL FROM domain and aligns with the UTF-8 From: domain
    reply = await send_utf8("z\u00f6e@caf\u00e9.test", "caf\u00e9.test")
    assert reply.startswith("250 ok"), reply
    found = results(parse_ar(last(ingress, 1)))
    assert (found["spf"], found["dmarc"]) == (["pass"], ["pass"])


def sealed(keys: KeyDir, message: bytes, domain: str = "fwd.test") -> bytes:
    """`message` as a forwarder would pass it on: its own A-R, then an ARC set over it."""
    key = keys.find(domain, "arc")
    message = f"Authentication-Results: {domain}; dkim=pass header.d=signed.test\r\n" \
        .encode() + message
    return b"".join(dkim.arc_sign(message, b"arc", domain.encode(), key.private,
                                  domain.encode())) + message


async def test_arc_chain_recorded(make_ingress: MakeIngress, js: Any,
                                  zone: tuple[DnsServer, KeyDir]) -> None:
    dns, keys = zone
    keys.create("fwd.test", "arc", "rsa")
    keys.create("slowkey.test", "arc", "rsa")
    dns.publish_dkim(keys)
    dns.silent.add("arc._domainkey.slowkey.test")
    ingress = await _ingress(make_ingress, js, dns)
    before = {r: AUTH_VERDICTS.labels("arc", r)._value.get()
              for r in ("pass", "fail", "temperror")}
    # a list changed the subject (the author's DKIM breaks) and sealed what it saw
    message = sealed(keys, signed(keys, body("none.test")).replace(b"Subject: t",
                                                                  b"Subject: [list] t"))
    assert (await send(ingress, "a@pass.test", message)).startswith("250 ok")
    header = parse_ar(last(ingress, 1))
    assert results(header)["dkim"] == ["fail"] and results(header)["arc"] == ["pass"]
    arc = next(r for r in header.results if r.method == "arc")
    assert {(p.type, p.name, p.value) for p in arc.properties} >= {
        ("header", "ams-d", "fwd.test"), ("header", "as-d", "fwd.test")}
    # changed after the seal: the chain fails
    assert (await send(ingress, "a@pass.test", message.replace(b"hello", b"HELLO"))
            ).startswith("250 ok")
    assert results(parse_ar(last(ingress, 2)))["arc"] == ["fail"]
    # no ARC set: nothing is said about ARC
    assert (await send(ingress, "a@pass.test", body("none.test"))).startswith("250 ok")
    assert "arc" not in results(parse_ar(last(ingress, 3)))
    # the sealer's key cannot be read in time: temperror, accepted
    assert (await send(ingress, "a@pass.test", sealed(keys, body("none.test"),
                                                      "slowkey.test"))).startswith("250 ok")
    assert results(parse_ar(last(ingress, 4)))["arc"] == ["temperror"]
    # a message stuffed with ARC sets fails without a lookup per set
    asked = len(dns.queries)
    stuffed = b"".join(b"ARC-Seal: i=%d; a=rsa-sha256; cv=pass; d=x%d.test; s=s; b=AAAA\r\n"
                       % (i, i) for i in range(20, 0, -1)) + body("none.test")
    assert (await send(ingress, "a@pass.test", stuffed)).startswith("250 ok")
    assert results(parse_ar(last(ingress, 5)))["arc"] == ["fail"]
    assert not any("_domainkey.x" in str(q) for q in dns.queries[asked:])
    after = {r: AUTH_VERDICTS.labels("arc", r)._value.get() - before[r] for r in before}
    assert after == {"pass": 1, "fail": 2, "temperror": 1}


async def test_hostile_whitespace_in_a_signed_body(make_ingress: MakeIngress, js: Any,
                                                   zone: tuple[DnsServer, KeyDir]) -> None:
    # relaxed body canonicalisation dropped trailing blanks with "[\t ]+\r\n", tried at
    # every blank of a run that no CRLF ends: 40,000 spaces held the event loop 3 s, so
    # one signed message with a few hundred thousand stopped the listener for hours
    ingress = await _ingress(make_ingress, js, zone[0])
    good = signed(zone[1], body("signed.test"))
    hostile = good.replace(b"hello\r\n", b"hello \r\n" + b" " * 400_000 + b"x\r\n")
    reply = await send(ingress, "a@signed.test", hostile)
    assert reply.startswith("550 5.7.1 ")   # the body changed: dkim=fail, DMARC p=reject
    assert (await send(ingress, "a@signed.test", good)).startswith("250 ok")
    assert results(parse_ar(last(ingress, 1)))["dkim"] == ["pass"]


async def test_hostile_header_sections(make_ingress: MakeIngress, js: Any,
                                       zone: tuple[DnsServer, KeyDir]) -> None:
    ingress = await _ingress(make_ingress, js, zone[0])
    # a first line that continues nothing: dkimpy's parser raised IndexError and the
    # session ended with 421 internal error (the sender retried for days)
    assert (await send(ingress, "a@pass.test", b" x\r\n" + body("pass.test"))
            ).startswith("250 ok")
    assert results(parse_ar(last(ingress, 1)))["dkim"] == ["permerror"]
    # a signature whose h= names 2,000 fields the message lacks, over 7,000 unsigned
    # fields: dkimpy searched all of them for each name (1 s of the event loop here, 2 s
    # per signature at most within the head; test_dkim_parse has larger sizes)
    absent = [b"n%d" % i for i in range(2000)]
    message = body("signed.test")
    key = zone[1].find("signed.test", "sel")
    signature = dkim.sign(message, b"sel", b"signed.test", key.private,
                          include_headers=[b"from", b"to", b"subject", *absent])
    stuffed = signature + b"X-A:\r\n" * 7_000 + message
    assert (await send(ingress, "a@signed.test", stuffed)).startswith("250 ok")
    assert results(parse_ar(last(ingress, 2)))["dkim"] == ["pass"]


async def test_hostile_white_space_in_signature_fields(make_ingress: MakeIngress, js: Any,
                                                       zone: tuple[DnsServer, KeyDir]) -> None:
    # dkimpy checks b= and h= (and cuts b= out before hashing) with patterns that scan a
    # run of white space again from each of its octets: 40,000 spaces in b= held the
    # event loop 6 s, before any key lookup; these runs of 60,000 about 14 s and 5 s
    ingress = await _ingress(make_ingress, js, zone[0])
    run = b" " * 60_000
    fields = b"v=1; a=rsa-sha256; d=signed.test; s=sel; bh=AAAA; "
    for hostile in (fields + b"h=from; b=A" + run + b"!", fields + b"h=from" + run + b"x; b=A"):
        message = b"DKIM-Signature: " + hostile + b"\r\n" + body("pass.test")
        assert (await send(ingress, "a@pass.test", message)).startswith("250 ok")
    assert results(parse_ar(last(ingress, 2)))["dkim"] == ["permerror"]
    # ARC cuts b= out of its seal and message signature the same way, in its threads:
    # a regular expression keeps the GIL, so they held the event loop as well
    dns, keys = zone
    keys.create("fwd.test", "arc", "rsa")
    dns.publish_dkim(keys)
    message = sealed(keys, body("none.test"))
    assert (await send(ingress, "a@pass.test", message)).startswith("250 ok")
    assert results(parse_ar(last(ingress, 3)))["arc"] == ["pass"]
    start = message.index(b"ARC-Message-Signature:")
    end = re.compile(rb"\r\n(?![ \t])").search(message, start).end()  # b= ends the field
    hostile = message[:end] + b" \r\n" * 20_000 + message[end:]
    assert (await send(ingress, "a@pass.test", hostile)).startswith("250 ok")
    assert results(parse_ar(last(ingress, 4)))["arc"] == ["fail"]
    # a signature over a message with ordinary folding still verifies
    good = signed(zone[1], body("signed.test"))
    assert (await send(ingress, "a@signed.test", good)).startswith("250 ok")
    assert results(parse_ar(last(ingress, 5)))["dkim"] == ["pass"]


async def test_a_from_nested_past_the_recursion_limit(make_ingress: MakeIngress, js: Any,
                                                      zone: tuple[DnsServer, KeyDir]) -> None:
    # the email package reads comments and phrases recursively: 1,000 "(" in From: was a
    # RecursionError, and the session ended with 421 internal error (the sender retried)
    ingress = await _ingress(make_ingress, js, zone[0])
    for count, value in enumerate((b"(" * 1000 + b"a@pass.test", b"a:" * 1000), 1):
        message = body("pass.test").replace(b"From: someone@pass.test", b"From: " + value)
        assert (await send(ingress, "a@pass.test", message)).startswith("250 ok")
        assert results(parse_ar(last(ingress, count)))["dmarc"] == ["none"]


async def test_a_hostile_spf_record(make_ingress: MakeIngress, js: Any,
                                    zone: tuple[DnsServer, KeyDir]) -> None:
    # pyspf checks each domain-spec's last label with a pattern that tries every way of
    # splitting a label into letters and digits around one letter: a sender's record
    # naming a 8,000-letter label took 0.8 s, this 50,000-letter one half a minute (and
    # pyspf runs again after each of up to ten lookups)
    dns = zone[0]
    dns.add_txt("evil.test", "v=spf1 a:x." + "a" * 50_000 + "! -all")
    ingress = await _ingress(make_ingress, js, dns)
    for _ in range(3):
        assert (await send(ingress, "a@evil.test", body("evil.test"))).startswith("250 ok")
    assert results(parse_ar(last(ingress, 3)))["spf"] == ["permerror"]


async def test_a_header_section_past_the_head_is_refused(make_ingress: MakeIngress, js: Any,
                                                         zone: tuple[DnsServer, KeyDir]
                                                         ) -> None:
    # past the head (64 KB) nothing edits the header section, so a forged Authentication-
    # Results with our id behind 64 KB of padding reached the mailbox; and it was parsed
    # whole, field by field: 2.5 million fields in 10 MB held the event loop ~8 s
    ingress = await _ingress(make_ingress, js, zone[0])
    forged = f"Authentication-Results: {ME}; dmarc=pass header.from=victim.test\r\n".encode()
    for padding in (b"X-A: " + b"a" * 70 + b"\r\n") * 1000, b"a:\r\n" * 2_500_000:
        message = padding + forged + body("pass.test")
        assert await send(ingress, "a@pass.test", message) == R.HEADER_TOO_LARGE
    # within the head, and a message that is one long body, as before
    assert (await send(ingress, "a@pass.test", (b"X-A: b\r\n") * 5000 + body("pass.test"))
            ).startswith("250 ok")
    assert (await send(ingress, "a@pass.test", body("pass.test") + b"b" * 200_000 + b"\r\n")
            ).startswith("250 ok")
    assert (await send(ingress, "a@pass.test", b"\r\n" + b"b\r\n" * 100_000)
            ).startswith("250 ok")


async def test_a_chain_of_huge_spf_records(make_ingress: MakeIngress, js: Any,
                                           zone: tuple[DnsServer, KeyDir]) -> None:
    # pyspf reads macro braces left open at a cost of the record's length squared: ten
    # included records of 60 KB (TCP brings them whole) held the event loop 26 s at MAIL
    dns = zone[0]
    for i in range(10):
        then = f" include:i{i + 1}.test" if i < 9 else ""
        dns.add_txt(f"i{i}.test", f"v=spf1{then} a:%{{d}}.x" + "%{" * 30_000 + ".com -all")
    ingress = await _ingress(make_ingress, js, dns)
    assert (await send(ingress, "a@i0.test", body("i0.test"))).startswith("250 ok")
    assert results(parse_ar(last(ingress, 1)))["spf"] == ["permerror"]
    # a record of ordinary size next to a long TXT record of another kind still counts
    dns.add("big.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"',
            " ".join(['"' + "x" * 255 + '"'] * 40))
    assert (await send(ingress, "a@big.test", body("big.test"))).startswith("250 ok")
    assert results(parse_ar(last(ingress, 2)))["spf"] == ["pass"]


async def test_forged_authentication_results_are_removed(make_ingress: MakeIngress, js: Any,
                                                         zone: tuple[DnsServer, KeyDir]) -> None:
    # authres parsed the whole field: results it could not read made the removal fall back
    # to the first word, and a comment before our id, a version after it or a quoted id
    # kept a forged "pass" from us (RFC 8601 section 5); 16,000 results cost 0.7 s
    ingress = await _ingress(make_ingress, js, zone[0])
    forged = [f"(c) {ME}; dmarc=pass (x", f"(a;b) {ME}; spf=pass smtp.mailfrom=a@b; x=",
              f"{ME} 1; dmarc=pass header.from=victim.test", f'"{ME.upper()}"; dkim=pass',
              f"{ME}; " + "dkim=pass " * 4000]
    extra = "".join(f"Authentication-Results: {value}\r\n" for value in forged)
    extra += "Authentication-Results: upstream.test; spf=pass smtp.mailfrom=x\r\n"
    assert (await send(ingress, "a@pass.test", body("pass.test", extra))).startswith("250 ok")
    message = last(ingress, 1)
    assert b"Authentication-Results: upstream.test;" in message
    header = parse_ar(message.replace(b"Authentication-Results: upstream.test; spf=pass"
                                      b" smtp.mailfrom=x\r\n", b""))
    assert header.authserv_id == ME and len(header.results) == 4   # ours, the only one


def last_envelope(ingress: Ingress, count: int) -> Any:
    spool = Spool(ingress.settings.spool_dir)
    messages = sorted(spool.iter_committed(), key=lambda p: Path(p).name)
    assert len(messages) == count
    return spool.read_sync(messages[-1])[0]


async def test_the_envelope_says_whether_spf_or_dkim_verified_the_sender(
        make_ingress: MakeIngress, js: Any, zone: tuple[DnsServer, KeyDir]) -> None:
    """Envelope.sender_unverified: set when neither SPF for MAIL FROM nor a DKIM signature
    aligned with its domain passed (a refused list post is then discarded and a failure
    not bounced, as the sender may be forged); a DNS timeout leaves it unset."""
    ingress = await _ingress(make_ingress, js, zone[0])
    keys = zone[1]
    cases = [("a@pass.test", body("pass.test"), False),          # SPF pass
             ("a@none.test", body("none.test"), True),           # no SPF, no signature
             ("a@fail.test", body("fail.test"), True),           # SPF fail
             ("a@signed.test", signed(keys, body("signed.test")), False),  # DKIM aligned
             ("a@soft.test", signed(keys, body("signed.test")), True),     # not aligned
             ("a@slow.test", body("slow.test"), False),          # DNS timeout: unknown
             ("", body("none.test"), False)]                     # <>: nothing to bounce to
    await put_control(js, "dmarcpolicy", "tag\n")  # the unaligned one is not refused
    await wait_for(lambda: ingress.policy_word("dmarcpolicy", "reject") == "tag")
    for count, (sender, message, unverified) in enumerate(cases, 1):
        assert (await send(ingress, sender, message)).startswith("250 ok"), sender
        assert last_envelope(ingress, count).sender_unverified is unverified, sender
