"""The incremental DATA decoder against a whole-buffer reference, over any chunking. Long
lines are passed on in pieces past PARTIAL_MAX; the tests use a tiny one (SMALL) so that
path is taken all the time."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailyard.smtp_ingress.data_decoder import DataDecoder, decode_whole, line_facts

SMALL = 6

# lines made of the bytes that matter (dots, CR, LF, NUL) and some that do not
_LINE = st.one_of(
    st.binary(max_size=40),
    st.lists(st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"\0", b"x", b" "]),
             max_size=12).map(b"".join),
    st.sampled_from([b".", b"..", b"...x", b".\r", b"x" * (SMALL + 5), b"." * (SMALL * 3),
                     b"." * (SMALL + 3) + b"\r", b"x" * SMALL + b"\r..", b"\r" * SMALL]),
)


def _feed(stream: bytes, cuts: list[int]) -> tuple[bytes, bytes | None, bool, bool]:
    return _decode(stream, cuts)[0]


def _decode(stream: bytes, cuts: list[int]
            ) -> tuple[tuple[bytes, bytes | None, bool, bool], DataDecoder]:
    decoder = DataDecoder(SMALL)
    out, rest, start = b"", None, 0
    for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
        if cut < start:
            continue
        data, rest = decoder.feed(stream[start:cut])
        out += data
        start = cut
        if rest is not None or decoder.bare:
            rest = None if rest is None else rest + stream[start:]
            break
    return (out, rest, decoder.bare, decoder.nul), decoder


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_LINE, max_size=12), after=st.binary(max_size=20),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_chunking_decodes_like_the_whole(lines: list[bytes], after: bytes,
                                             cuts: list[int]) -> None:
    stream = b"".join(line + b"\r\n" for line in lines) + b".\r\n" + after
    message, rest, bare, nul = decode_whole(stream)
    (got, got_rest, got_bare, got_nul), decoder = _decode(stream, cuts)
    assert got_bare == bare
    if not bare:
        assert (got, got_rest, got_nul) == (message, rest, nul)
        # what delivery relies on to skip its own passes over the message (Lines)
        assert (decoder.longest, decoder.leading_dot) == line_facts(message)


@settings(max_examples=200, deadline=None)
@given(stream=st.binary(max_size=200), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_arbitrary_bytes_never_break_it(stream: bytes, cuts: list[int]) -> None:
    """Any input: no exception, and nothing beyond what came in is produced."""
    out, rest, _, _ = _feed(stream, cuts)
    assert len(out) + len(rest or b"") <= len(stream)


def test_known_cases() -> None:
    assert decode_whole(b".\r\nQUIT\r\n") == (b"", b"QUIT\r\n", False, False)
    assert decode_whole(b"..x\r\n...\r\n.\r\n") == (b".x\r\n..\r\n", b"", False, False)
    assert decode_whole(b"a\nb\r\n.\r\n")[2]  # bare LF
    assert decode_whole(b"\0.\r\n.\r\n")[3]   # the nullbefore line
    assert _feed(b"x\r\n.", [1, 2, 3, 4]) == (b"x\r\n", None, False, False)
    assert _feed(b"x\r\n.\r", [4])[1] is None


def test_known_facts() -> None:
    """The longest line counts the pieces of a line passed on before its end; a dot
    that ends the data, or stuffs a line, is told apart from a dot beginning a line."""
    for stream, cuts, facts in [
        (b"abc\r\n.\r\n", [], (3, False)),
        (b".\r\n", [], (0, False)),
        (b"..x\r\n.\r\n", [2], (2, True)),
        (b"a\r\n.b\r\n.\r\n", [], (2, True)),
        (b"a\r\n" + b"y" * 40 + b"\r\n.\r\n", [10, 20, 30], (40, False)),
        (b"." + b"y" * 40 + b"\r\n.\r\n", [10, 20], (41, True)),
    ]:
        (out, rest, bare, _), decoder = _decode(stream, cuts)
        assert rest == b"" and not bare, stream
        assert (decoder.longest, decoder.leading_dot) == facts == line_facts(out), stream
