"""Listings in pages (Google AIP-158) for the admin APIs: the directory's List* and
relay-auth's ListLeases.

One answer with everything failed past gRPC's 4 MiB (100,000 mailboxes, 50,000 domains) and
made the HTTP API build documents of hundreds of MB. A page is at most MAX_PAGE_SIZE records
and about PAGE_BYTES; next_page_token carries the sort key of the page's last record
(base64url: opaque to clients), and the next page starts after that key. So a record added
or deleted between two pages moves no other record: the walk repeats and skips nothing
(a record added behind the walk's position is simply not in it).

The keys are kept in order as they change (SortedKeys), so a page costs O(log n + page)
and a walk over n records O(n log n), not a sort of everything per page.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 1000
# A page stops growing past this many bytes of records (AIP-158 lets a page hold fewer than
# page_size): 1,000 mailing lists of 100,000 members each would not fit any gRPC answer.
PAGE_BYTES = 1 << 20
_MAX_TOKEN = 2048  # far beyond any key a store holds (a KV key, an IP)


class BadPage(ValueError):
    """A page_size or page_token the listing cannot take (INVALID_ARGUMENT / 400)."""


def page_size(requested: int) -> int:
    """AIP-158: 0 is the default, more than the maximum is the maximum, negative an error."""
    if requested < 0:
        raise BadPage(f"page_size must not be negative (got {requested})")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_token(token: str, prefix: str) -> str:
    """The sort key a next_page_token of the listing of `prefix` carries ("" for none)."""
    if not token:
        return ""
    try:
        if len(token) > _MAX_TOKEN:
            raise ValueError("too long")
        key = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, binascii.Error):
        key = ""
    if not key.startswith(prefix) or key == prefix:  # another listing's, or made up
        raise BadPage("page_token is not a next_page_token of this listing")
    return key


class SortedKeys:
    """The keys of a changing mapping, in the order `order(key)` gives, for pages.

    Built from `load()` at the first listing (not while a view loads its initial values),
    then kept by add/discard: an insertion into a sorted list is a memmove, far cheaper than
    sorting 100,000 keys again for every page.
    """

    def __init__(self, load: Callable[[], Iterable[str]],
                 order: Callable[[str], str] = str) -> None:
        self._load = load
        self._order = order
        self._keys: list[str] | None = None

    def sort_key(self, key: str) -> str:
        return self._order(key)

    def add(self, key: str) -> None:
        if self._keys is None:
            return
        i = bisect.bisect_left(self._keys, self._order(key), key=self._order)
        if i == len(self._keys) or self._keys[i] != key:
            self._keys.insert(i, key)

    def discard(self, key: str) -> None:
        if self._keys is None:
            return
        i = bisect.bisect_left(self._keys, self._order(key), key=self._order)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]

    def after(self, prefix: str, last: str) -> Iterator[str]:
        """Keys whose sort key starts with `prefix` and comes after `last`, in order."""
        if self._keys is None:
            self._keys = sorted(self._load(), key=self._order)
        keys = self._keys
        i = (bisect.bisect_right(keys, last, key=self._order) if last
             else bisect.bisect_left(keys, prefix, key=self._order))
        while i < len(keys) and self._order(keys[i]).startswith(prefix):
            yield keys[i]
            i += 1


def page(keys: SortedKeys, prefix: str, size: int, token: str,
         fetch: Callable[[str], tuple[T, int] | None]) -> tuple[list[T], str]:
    """One page of the listing of `prefix`: its records and its next_page_token.

    size and token as the request has them (checked here: BadPage). fetch(key) gives a
    key's record and its size in bytes, or None to leave the key out (e.g. an expired lease).
    """
    limit = page_size(size)
    last = decode_token(token, prefix)
    records: list[T] = []
    used = 0
    end = ""
    for key in keys.after(prefix, last):
        found = fetch(key)
        if found is None:
            continue
        if len(records) == limit or (records and used + found[1] > PAGE_BYTES):
            return records, encode_token(end)  # there is more
        records.append(found[0])
        used += found[1]
        end = keys.sort_key(key)
    return records, ""
