"""What follows the 354 is the same whether smtp-ingress's Lines facts let wire() skip its
passes over the bytes or not (bounces, forwards and old files have none)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.api.mail.v1.envelope_pb2 import Lines
from mailyard.remote_delivery.linelength import LIMIT
from mailyard.remote_delivery.wire import Wire, wire

# lines without CR or LF, some starting with dots, some longer than LIMIT
_LINE = st.one_of(
    st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b".", b"..", b".x", b"x" * LIMIT, b"x" * (LIMIT + 1), b"." * 2500]),
)


def facts(message: bytes) -> Lines:
    lines = message.split(b"\r\n")[:-1]
    return Lines(longest=max(map(len, lines), default=0),
                 leading_dot=any(line.startswith(b".") for line in lines))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LINE, min_size=1, max_size=10), extra=st.integers(0, 3000))
def test_facts_change_nothing_on_the_wire(lines: list[bytes], extra: int) -> None:
    message = b"".join(line + b"\r\n" for line in lines)
    known = facts(message)
    assert wire(message, known) == wire(message, None)
    # a longest line too high (a header section edited after it was measured) only costs
    # the look for lines to fold
    high = Lines(longest=known.longest + extra, leading_dot=known.leading_dot)
    assert wire(message, high) == wire(message, None)


def test_the_facts_are_believed() -> None:
    """With facts, the passes they answer are not made: a dot line the facts deny is sent
    as it is (which is why ingress must never deny one: tests/e2e sends one through)."""
    message = b"a\r\n.b\r\n"
    assert wire(message, None) == Wire(len(message), b"a\r\n..b\r\n.\r\n")
    assert wire(message, Lines(longest=2, leading_dot=False)).data == b"a\r\n.b\r\n.\r\n"
    long = b"y" * (LIMIT + 5) + b"\r\n"
    assert wire(long, Lines(longest=LIMIT, leading_dot=False)).data == long + b".\r\n"
    folded = wire(long, Lines(longest=LIMIT + 5, leading_dot=False))
    assert folded == wire(long, None) and folded.size == len(long) + 3


def test_without_a_final_crlf_the_facts_are_not_used() -> None:
    """A message not ending in CRLF cannot be what ingress measured: every pass is made."""
    assert wire(b"a\nb", Lines(longest=1)).data == b"a\r\nb\r\n.\r\n"
