"""Property tests for what reads hostile header bytes in the sender checks: the removal of
Authentication-Results fields with our authserv-id, the one we add from values read out of
the message (DKIM d= and s=, the From: domain), From: domain extraction, long lines."""

from __future__ import annotations

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from mailyard.core.addresses import to_ascii_domain
from mailyard.core.dkim_sign import from_domain, has_long_line
from mailyard.smtp_ingress.authresults import header, strip_ours
from mailyard.smtp_ingress.dkim_verify import DkimResult
from mailyard.smtp_ingress.dmarc_eval import DmarcResult
from mailyard.smtp_ingress.spf_check import SpfResult

ME = "mx.test"
header_bytes = st.binary(max_size=400).map(lambda b: b.replace(b"\r\n\r\n", b"\r\n"))
names = st.sampled_from([b"Authentication-Results", b"authentication-results", b"Subject",
                         b"Received", b"X-A"])
values = st.one_of(st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(
    b"\n", b"")), st.sampled_from([b" mx.test; spf=pass", b" MX.TEST;\r\n\tdkim=pass",
                                   b" other.test; spf=fail", b" (c) mx.test ; x", b""]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(names, values), max_size=8), st.binary(max_size=200))
def test_strip_ours_keeps_everything_but_our_fields(fields: list[tuple[bytes, bytes]],
                                                    body: bytes) -> None:
    head = b"".join(n + b":" + v + b"\r\n" for n, v in fields)
    message = head + b"\r\n" + body
    out = strip_ours(message, ME)
    assert out.endswith(b"\r\n" + body)                 # the body is never touched
    out_head = out[:len(out) - len(body) - 2]
    for line in out_head.split(b"\r\n"):
        if line.lower().startswith(b"authentication-results:"):
            first = line.split(b":", 1)[1].split(b";")[0].split()
            assert not first or first[0].lower() != ME.encode()
    assert strip_ours(out, ME) == out                    # idempotent
    kept_others = [n for n, _ in fields if n.lower() != b"authentication-results"]
    assert len(kept_others) <= out_head.count(b"\r\n")


@settings(max_examples=300, deadline=None)
@given(header_bytes)
@example(b"(" * 1000 + b"a@b.test")   # past the email package's recursion
@example(b"a:" * 1000)
@example("Zo\u00eb <z@B\u00dcCHER.test>".encode())   # SMTPUTF8: the A-label
@example(b"\x80\xc2\x80")                          # a stray octet beside UTF-8
def test_from_domain_never_raises(raw: bytes) -> None:
    domain = from_domain(b"From: " + raw + b"\r\n\r\nbody")
    assert domain == domain.lower() and "@" not in domain
    from_domain(raw)


# ASCII, letters whose case or IDNA mapping is not one to one, a joiner, a combining accent
_LABEL_CHARS = st.sampled_from("abcXYZ09-ßéÜ\u0130\u0131\u017f\u212a\u03a3\u03c2\u200d\u0301")


@settings(max_examples=300, deadline=1000)
@given(st.lists(st.text(_LABEL_CHARS, min_size=1, max_size=12), min_size=1, max_size=3),
       st.sampled_from(["example", "xn--bcher-kva", "de"]))
def test_from_domain_is_the_a_label_keys_and_logins_use(labels: list[str], tld: str) -> None:
    """A From: domain written as U-label (UTF-8 header) or A-label, in any case, with a
    final dot, is the one name the key folder and the directory use (its lower-case
    A-label): so a domain's keys are found, and compared with a login's domain, whatever
    the form."""
    domain = ".".join([*labels, tld])
    a_label = to_ascii_domain(domain)
    assume(a_label.isascii())  # a name IDNA refuses: no key or login can be named by it
    for field in (f"From: x@{domain}", f"From: Jörg <x@{domain}.>", f"From: x@{a_label}",
                  f"From: x@{a_label.upper()}", f"From: (c) x@{a_label}."):
        assert from_domain(f"{field}\r\n\r\nbody".encode()) == a_label, field


@given(st.lists(st.integers(min_value=0, max_value=1100), max_size=6))
def test_has_long_line_matches_line_lengths(lengths: list[int]) -> None:
    message = b"\r\n".join(b"x" * n for n in lengths)
    assert has_long_line(message) == any(n > 998 for n in lengths)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(names | st.just(b"Subject"), values), max_size=8),
       st.binary(max_size=100), st.text(max_size=40).map(lambda t: "".join(
           c for c in t if c.isprintable())))
def test_rewrite_subject_leaves_one_subject(fields: list[tuple[bytes, bytes]], body: bytes,
                                            subject: str) -> None:
    from mailyard.smtp_ingress.rspamd import rewrite_subject

    message = b"".join(n + b":" + v + b"\r\n" for n, v in fields) + b"\r\n" + body
    out = rewrite_subject(message, subject)
    assert out.startswith(b"Subject: " + subject.encode() + b"\r\n")
    assert out.endswith(b"\r\n" + body)
    head = out[:len(out) - len(body) - 2]
    assert sum(line.lower().startswith(b"subject:") for line in head.split(b"\r\n")) == 1


class _NoKeys:
    """DNS that knows no key: what the ARC verifier may ask while it reads hostile sets."""
    timeout = 1.0

    async def dkim_key(self, name: bytes, timeout: float = 5) -> bytes | None:
        return None


arc_names = st.sampled_from([b"ARC-Seal", b"ARC-Message-Signature",
                             b"ARC-Authentication-Results", b"arc-seal", b"Subject"])
arc_values = st.one_of(values, st.builds(
    lambda i, cv, rest: b" i=%d; a=rsa-sha256; cv=%s; d=x.test; s=s; %s" % (i, cv, rest),
    st.integers(min_value=-2, max_value=60), st.sampled_from([b"none", b"pass", b"fail", b""]),
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(arc_names, arc_values), max_size=8), st.binary(max_size=100))
def test_arc_validation_of_hostile_sets_always_has_a_result(
        fields: list[tuple[bytes, bytes]], body: bytes) -> None:
    import asyncio

    from mailyard.smtp_ingress.arc_verify import RESULTS, ArcVerifier, seals
    head = b"".join(n + b":" + v + b"\r\n" for n, v in fields)
    verifier = ArcVerifier(_NoKeys())  # type: ignore[arg-type]
    try:
        result = asyncio.run(verifier.verify(head + b"\r\n" + body, seals(head.lower())))
    finally:
        verifier.close()
    if seals(head.lower()) == 0:
        assert result is None
    else:
        assert result is not None and result.result in RESULTS
        assert result.result != "pass"        # nothing here is validly sealed


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=40))
@example("example.com\n", "sel\n", "from.test\n")
def test_our_authentication_results_is_one_field_whatever_the_message_says(
        d: str, s: str, from_domain: str) -> None:
    # a value ending in a line break ("example.com\n") once passed the property-value
    # check (re.match with "$" matches before a final "\n") and split our field in two
    field = header(ME, SpfResult("pass", "a.test", "mailfrom"), None,
                   [DkimResult("fail", d, s)], DmarcResult("fail", from_domain, "reject"))
    lines = field.split(b"\r\n")
    assert lines[-1] == b"" and lines[0].startswith(b"Authentication-Results: mx.test;")
    assert all(line.startswith(b"\t") for line in lines[1:-1])
    assert b"\r" not in field.replace(b"\r\n", b"") and b"\n" not in field.replace(b"\r\n", b"")
