"""Outbound lines never exceed 998 octets (RFC 5321 4.5.3.1.6): folded as Postfix's
smtp_line_length_limit does, checked over real SMTP and as a property."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from remote_rig import Rig, Smtp

from mailyard.api.mail.v1.delivery_pb2 import OUTCOME_DELIVERED
from mailyard.remote_delivery.linelength import LIMIT, fold
from mailyard.remote_delivery.wire import normalise


def longest(message: bytes) -> int:
    return max(len(line) for line in message.split(b"\r\n"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 3000).map(lambda n: b"x" * n),
                          st.binary(max_size=2500)), max_size=6))
def test_no_line_over_the_limit_and_nothing_lost(lines: list[bytes]) -> None:
    message = normalise(b"\r\n".join(lines))
    folded = fold(message)
    assert longest(folded) <= LIMIT
    if longest(message) <= LIMIT:
        assert folded is message  # the common case costs one scan
    else:  # only CRLF SPACE was inserted: unfolding restores every octet
        assert _unfold(folded, message) == message


def _unfold(folded: bytes, original: bytes) -> bytes:
    """Undo exactly the breaks fold() inserted (lines of the original may start with a
    space themselves, so this walks both)."""
    out, lines = [], folded.split(b"\r\n")
    for line in original.split(b"\r\n"):
        got = lines.pop(0)
        while len(got) < len(line):
            got += lines.pop(0)[1:]
        out.append(got)
    return b"\r\n".join(out)


async def test_a_3000_octet_line_arrives_folded(rig: Rig, smtp_servers) -> None:  # type: ignore[no-untyped-def]
    server = Smtp().start()
    smtp_servers.append(server)
    await rig.routes(f"long.test:127.0.0.1:{server.port}")
    long_header = b"X-Long: " + b"h" * 1500
    body = b"<p>" + b"a" * 2997 + b"</p>"
    stored = b"Subject: long\r\n" + long_header + b"\r\n\r\n" + body + b"\r\nshort\r\n"
    job = await rig.message(stored, ["u@long.test"])
    out = await rig.deliverer.deliver(job, stored)
    assert out[0].outcome == OUTCOME_DELIVERED
    got = server.messages[0].data
    assert longest(got) <= LIMIT
    assert got.replace(b"\r\n ", b"") == stored  # only CRLF SPACE was inserted
    assert b"\r\n\r\n" in got and got.endswith(b"\r\nshort\r\n")
