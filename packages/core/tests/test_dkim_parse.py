"""dkimpy's header parsing and h= selection, replaced by linear ones (dkim_parse), give what
dkimpy's own give on hostile messages, and stay linear where dkimpy's were not."""

from __future__ import annotations

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.core import dkim_parse

lines = st.sampled_from([b"From: a@b.test", b"from:x", b"Subject: s", b" folded", b"\tx",
                         b"X-A:", b"a:b:c", b"From a line", b"bad line", b"", b"\xff:1",
                         b"DKIM-Signature: v=1"])
messages = st.lists(lines, max_size=12).flatmap(
    lambda ls: st.sampled_from([b"\r\n", b"\n"]).map(lambda sep: sep.join(ls)))


def outcome(parse: object, message: bytes) -> object:
    try:
        return parse(message)  # type: ignore[operator]
    except dkim.MessageFormatError as exc:
        return str(exc)
    except IndexError:   # dkimpy's, for a first line that is a continuation
        return "continuation"


@settings(max_examples=500, deadline=None)
@given(messages)
def test_rfc822_parse_matches_dkimpy(message: bytes) -> None:
    want = outcome(dkim_parse.DKIMPY["rfc822_parse"], message)
    got = outcome(dkim_parse.rfc822_parse, message)
    if want == "continuation":
        assert got == "a continuation line before any header field"
    else:
        assert got == want


names = st.sampled_from([b"from", b"to", b"subject", b"x-a", b"date"])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"From", b"from", b"To", b"X-A", b"Date "]),
                          st.sampled_from([b"1", b"2", b"3"])), max_size=10),
       st.lists(names, max_size=12))
def test_select_headers_matches_dkimpy(headers: list[tuple[bytes, bytes]],
                                       include: list[bytes]) -> None:
    assert dkim_parse.select_headers(headers, include) == \
        dkim_parse.DKIMPY["select_headers"](headers, include)


@pytest.mark.timeout(30)
def test_hostile_headers_are_read_in_linear_time() -> None:
    # dkimpy's: a field folded over 4 MB of short lines, minutes; 20,000 h= names none of
    # which is among 20,000 fields, 400 million comparisons
    assert dkim.rfc822_parse is dkim_parse.rfc822_parse   # installed
    folded = b"Subject: x\r\n" + b" a\r\n" * 1_000_000 + b"\r\nbody"
    headers, body = dkim.rfc822_parse(folded)
    assert len(headers) == 1 and len(headers[0][1]) == 4_000_004 and body == b"body"
    fields = [(b"X-%d" % i, b"v") for i in range(20_000)]
    absent = [b"y-%d" % i for i in range(20_000)]
    assert dkim.select_headers(fields, [*absent, b"x-7"]) == [(b"X-7", b"v")]
