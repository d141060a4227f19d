"""The list loop guard reads a header anyone can write: it never raises, takes linear time
on long or odd headers, finds this list's own List-Id or Mailing-List wherever it is
(folded, any case, among other fields) and no other list's."""

from __future__ import annotations

import time

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailyard.local_delivery.listmail import went_through

LIST = "news@example.com"
NAMES = st.sampled_from(["List-Id", "list-id ", "Mailing-List", "List-Post", "Subject",
                         "Received", "X-A", ""])
TEXT = st.text(alphabet=st.sampled_from(list("ab<>@:;.-+\" \t\r\n\x00é")) |
               st.characters(blacklist_categories=("Cs",)), max_size=80)
LINE = st.tuples(NAMES, TEXT).map(lambda f: f"{f[0]}:{f[1]}".encode())
OURS = st.sampled_from([b"List-Id: <news.example.com>", b"LIST-ID: News\r\n\t<NEWS.Example.COM>",
                        b"list-id:<news.example.com> (x)",
                        b"Mailing-List: contact news-help@example.com; run by ezmlm",
                        b"mailing-list: list News@Example.com"])


def _has_news(lines: list[bytes]) -> bool:
    return any(b"news" in line.lower() for line in lines)


@settings(max_examples=400, deadline=2000)
@given(st.lists(LINE, max_size=12), st.sampled_from([b"\r\n", b"\n"]))
@example([b"List-Id: <news.example.com.evil>", b"Mailing-List: newsletter@example.com"],
         b"\r\n")
def test_only_this_lists_fields_count(lines: list[bytes], eol: bytes) -> None:
    found = went_through(eol.join(lines), LIST)
    if not _has_news(lines):
        assert not found


@settings(max_examples=300, deadline=2000)
@given(st.lists(LINE, max_size=12), OURS, st.integers(min_value=0, max_value=12),
       st.sampled_from([b"\r\n", b"\n"]))
def test_this_lists_field_is_found_anywhere(lines: list[bytes], ours: bytes, where: int,
                                            eol: bytes) -> None:
    # another field's value may not run on into ours: each line is a field of its own
    lines = [line.replace(b"\r", b"").replace(b"\n", b"") for line in lines]
    lines.insert(min(where, len(lines)), ours.replace(b"\r\n", eol))
    assert went_through(eol.join(lines), LIST)


@settings(max_examples=20, deadline=5000)
@given(st.sampled_from([b"List-Id:" + b"<" * 60000, b"Mailing-List:" + b"news-" * 12000,
                        b"List-Id: x\r\n" + b" \r\n" * 20000, b"a@" * 30000]))
def test_long_headers_take_linear_time(header: bytes) -> None:
    started = time.monotonic()
    went_through(header, LIST)
    assert time.monotonic() - started < 1
