"""The vacation reply's header reading and writing under hostile text: parse() never raises
and hands out one-line values and bare message ids; build() makes a message whose header
holds exactly its own fields, whatever the subject, body, name, original subject and ids."""

from __future__ import annotations

import email
import re
from email import policy

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.local_delivery import autoheaders
from mailyard.local_delivery.autoreply import build

MSG_ID = re.compile(r"<[!-;=?-~]{1,250}>")
FIELDS = ["Auto-Submitted", "Content-Transfer-Encoding", "Content-Type", "Date", "From",
          "In-Reply-To", "MIME-Version", "Message-ID", "References", "Subject", "To"]
NAMES = st.sampled_from(["Subject", "subject ", "Message-ID", "References", "In-Reply-To",
                         "To", "Cc", "Auto-Submitted", "Precedence", "List-Id", "X-Spam",
                         "Bcc", "From", ""])
# header text with what breaks parsers: CR, LF, folding, encoded words, NUL, 8-bit
TEXT = st.text(alphabet=st.sampled_from(list("ab<>@:;.\" \t\r\n\x00=?_é\u2028\x85")) |
               st.characters(blacklist_categories=("Cs",)), max_size=80)
LINE = st.tuples(NAMES, TEXT).map(lambda f: f"{f[0]}:{f[1]}".encode())


def _clean(text: str) -> bool:
    return not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", text)


@settings(max_examples=400, deadline=2000)
@given(st.lists(LINE, max_size=12), st.sampled_from([b"\r\n", b"\n"]), st.binary(max_size=200))
def test_parse_never_raises_and_hands_out_clean_values(lines: list[bytes], eol: bytes,
                                                       tail: bytes) -> None:
    orig = autoheaders.parse(eol.join(lines) + eol + eol + tail)
    assert _clean(orig.subject) and len(orig.subject) <= autoheaders.MAX_SUBJECT
    for msg_id in [orig.message_id, *orig.references] if orig.message_id else orig.references:
        assert MSG_ID.fullmatch(msg_id)
    assert len(orig.references) <= autoheaders.MAX_REFERENCES
    assert all(_clean(a) and "@" in a for a in orig.recipients)


@settings(max_examples=200, deadline=2000)
@given(subject=TEXT, body=TEXT | st.text(alphabet="ab \n", min_size=990, max_size=2000),
       gecos=TEXT, original=st.lists(LINE, max_size=6))
@example(subject="", body="", gecos="", original=[b"Subject:\n"])  # the header ends there
def test_reply_header_holds_only_its_own_fields(subject: str, body: str, gecos: str,
                                                 original: list[bytes]) -> None:
    orig = autoheaders.parse(b"\r\n".join([*original, b"Message-ID: <m@x.test>"]) + b"\r\n")
    auto = pb.Autoresponse(enabled=True, subject=subject, body=body + "x")
    mailbox = pb.Mailbox(address="joe@example.org", gecos=gecos)
    raw, utf8 = build(auto, mailbox, "ann@remote.test", orig, "mx.example.org", 1.9e9)
    assert not utf8
    header = raw.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0].decode() for line in header.split(b"\r\n")
             if line[:1] not in (b" ", b"\t")]
    # a generated line may end the original's header (a blank line) before its Message-ID:
    # then there is nothing to reply to by id
    threading = ("In-Reply-To", "References")
    assert sorted(names) == (FIELDS if orig.message_id
                             else [f for f in FIELDS if f not in threading])
    assert b"\n" not in raw.replace(b"\r\n", b"")  # no bare LF or CR anywhere
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert raw.isascii() and max(len(line) for line in raw.split(b"\r\n")) <= 998
    reply = email.message_from_bytes(raw, policy=policy.default)
    assert reply["To"] == "ann@remote.test"
    assert (reply["In-Reply-To"] or "") == orig.message_id
