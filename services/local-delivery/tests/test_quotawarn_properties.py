"""The quota warning from any text a control file (or an old host's .quotawarn.msg) holds:
compose() never raises, and its header holds exactly one of each field that is ours, the
mailbox as To, and nothing a reader would take for the end of the header."""

from __future__ import annotations

import email
from email import policy

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.local_delivery import quotawarn

NAMES = st.sampled_from(["Subject", "To", "to ", "Date", "Message-ID", "Auto-Submitted",
                         "Content-Type", "MIME-Version", "From", "X-A", " cont", ""])
VALUE = st.text(alphabet=st.sampled_from(list("ab<>@:;.\" \t\r\n\x00=é\u2028charset")),
                max_size=40)
LINE = st.tuples(NAMES, VALUE).map(lambda f: f"{f[0]}:{f[1]}")
ONCE = ("date", "message-id", "to", "auto-submitted", "return-path", "mime-version")


@settings(max_examples=400, deadline=2000)
@given(st.lists(LINE, max_size=8), st.sampled_from(["\n", "\r\n"]), st.text(max_size=200))
def test_any_text_makes_a_message_with_our_fields_once(lines: list[str], eol: str,
                                                       body: str) -> None:
    text = eol.join(lines) + eol + eol + body
    raw = quotawarn.compose(text, "joe@example.org", "example.org", now=0)
    head, sep, _ = raw.partition(b"\n\n")
    assert sep
    for line in head.split(b"\n"):
        assert line and b"\r" not in line and b"\x00" not in line
        assert line[:1] in b" \t" or quotawarn._FIELD.match(line.decode()), line
    msg = email.message_from_bytes(raw, policy=policy.default)
    for name in ONCE:
        assert len(msg.get_all(name) or []) == 1, (name, raw)
    assert [a.addr_spec for a in msg["To"].addresses] == ["joe@example.org"]
    assert msg["Auto-Submitted"] == "auto-generated"
