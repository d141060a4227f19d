"""The fast relaxed canonicalisation gives byte for byte what dkimpy's own gives, on hostile
bodies and header values (runs of spaces and tabs, bare CR and LF, trailing blanks)."""

from __future__ import annotations

from dkim import canonicalization
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.core import dkim_canon

pieces = st.sampled_from([b" ", b"  ", b"\t", b" \t", b"\r", b"\n", b"\r\n", b"a", b"word",
                          b"\x00", b"\xff", b"\r\n\r\n", b"\n\r"])
texts = st.lists(pieces, max_size=60).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(texts)
def test_each_function_matches_dkimpy(text: bytes) -> None:
    for name, original in dkim_canon.DKIMPY.items():
        assert getattr(dkim_canon, name)(text) == original(text), name


@settings(max_examples=300, deadline=None)
@given(texts, st.lists(st.tuples(st.sampled_from([b"From", b"Subject ", b"TO"]), texts),
                       max_size=4))
def test_relaxed_body_and_headers_match_dkimpy(body: bytes,
                                               fields: list[tuple[bytes, bytes]]) -> None:
    assert canonicalization.compress_whitespace is dkim_canon.compress_whitespace  # installed
    relaxed = canonicalization.Relaxed
    try:
        for name, original in dkim_canon.DKIMPY.items():
            setattr(canonicalization, name, original)
        want = relaxed.canonicalize_body(body), relaxed.canonicalize_headers(fields)
    finally:
        for name in dkim_canon.DKIMPY:
            setattr(canonicalization, name, getattr(dkim_canon, name))
    assert (relaxed.canonicalize_body(body), relaxed.canonicalize_headers(fields)) == want
