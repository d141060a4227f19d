"""The directory's listings in pages (mailyard.core.paging), from its live DirectoryView.

Records list in the order of their keys, as they always did; domains by name (their key
holds the name in base64url, whose order is not the name's), so their sort key is
"domain.<name>".
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core import paging
from mailyard.core.directory import DirectoryView, record_prefix
from mailyard.directory.errors import invalid

M = TypeVar("M", bound=Message)
_DOMAIN = "domain."


def _order(key: str) -> str:
    if not key.startswith(_DOMAIN):
        return key
    encoded = key[len(_DOMAIN):]
    try:
        return _DOMAIN + base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, binascii.Error):  # not a key the directory writes
        return key


class Listings:
    def __init__(self, view: DirectoryView) -> None:
        self.view = view
        self.keys = paging.SortedKeys(lambda: list(view.data), _order)
        view.on_change(self._changed)

    def _changed(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.keys.discard(key)
        else:
            self.keys.add(key)

    def _page(self, prefix: str, cls: type[M], size: int, token: str,
              shown: Callable[[M], M] = lambda record: record) -> tuple[list[M], str]:
        def fetch(key: str) -> tuple[M, int] | None:
            raw = self.view.data.get(key)
            return None if raw is None else (shown(cls.FromString(raw)), len(raw))

        try:
            return paging.page(self.keys, prefix, size, token, fetch)
        except paging.BadPage as exc:
            raise invalid(str(exc)) from None

    def domains(self, size: int, token: str) -> tuple[list[pb.Domain], str]:
        return self._page(_DOMAIN, pb.Domain, size, token)

    def records(self, kind: str, cls: type[M], domain: str, size: int, token: str,
                shown: Callable[[M], M] = lambda record: record) -> tuple[list[M], str]:
        """kind's records of one domain ("": of every domain)."""
        prefix = record_prefix(kind, domain) if domain else f"{kind}."
        return self._page(prefix, cls, size, token, shown)
