"""mailyard.core.paging: a page_token is hostile input (any client may send any text); it
decodes to a key of its listing or is a BadPage, never another exception; a token the
listing gave decodes back to its key; SortedKeys pages as a sort of everything would."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.core import paging
from mailyard.core.paging import BadPage, SortedKeys, decode_token, encode_token

hostile = (st.text(st.characters(codec="utf-8"), max_size=60)
           | st.text("ABCabc012-_=+/!.", max_size=60))
keys = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)


@settings(max_examples=300, deadline=None)
@given(hostile, st.sampled_from(["", "mailbox.", "mailbox.ZXhhbXBsZS5jb20."]))
def test_any_token_decodes_to_the_listings_key_or_is_refused(token: str, prefix: str) -> None:
    try:
        key = decode_token(token, prefix)
    except BadPage:
        return
    if not token:
        assert key == ""
    else:
        assert key.startswith(prefix) and key != prefix


@settings(max_examples=200, deadline=None)
@given(keys)
def test_a_token_decodes_back_to_its_key(tail: str) -> None:
    key = "alias." + tail + "x"
    assert decode_token(encode_token(key), "alias.") == key


def test_tokens_of_another_listing_or_too_long_are_refused() -> None:
    with pytest.raises(BadPage):
        decode_token(encode_token("alias.x"), "mailbox.")
    with pytest.raises(BadPage):
        decode_token(encode_token("mailbox." + "x" * 5000), "mailbox.")
    with pytest.raises(BadPage, match="negative"):
        paging.page_size(-1)
    assert (paging.page_size(0), paging.page_size(5), paging.page_size(2**31 - 1)) == (
        paging.DEFAULT_PAGE_SIZE, 5, paging.MAX_PAGE_SIZE)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abcdefgh"), st.text("xyz", max_size=3)),
                max_size=60),
       st.integers(1, 7))
def test_sorted_keys_page_as_a_sort_would(changes: list[tuple[bool, str, str]],
                                          size: int) -> None:
    data: dict[str, bytes] = {}
    index = SortedKeys(lambda: list(data), str.upper)
    for n, (add, first, rest) in enumerate(changes):
        key = f"k.{first}{rest}"
        if n == len(changes) // 2:
            list(index.after("", ""))  # built from data here, kept by add/discard after
        if add:
            data[key] = key.encode()
            index.add(key)
        else:
            data.pop(key, None)
            index.discard(key)
    walked: list[str] = []
    token = ""
    while True:
        page, token = paging.page(index, "K.", size, token,
                                  lambda k: (k, 1) if k in data else None)
        assert len(page) <= size
        walked.extend(page)
        if not token:
            break
    assert walked == sorted(data, key=str.upper)
