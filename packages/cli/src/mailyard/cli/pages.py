"""Every record of a listing that comes in pages (AIP-158: page_token, next_page_token), as
the pages come: `mailyard user list` prints 100,000 mailboxes without holding them all, and
no answer nears gRPC's message size limit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from mailyard.core.errors import MailyardError


def records(call: Callable[[Any], Any], request: Any, field: str) -> Iterator[Any]:
    """call(request) page after page, following next_page_token to the last page."""
    while True:
        answer = call(request)
        yield from getattr(answer, field)
        token = answer.next_page_token
        if not token:
            return
        if token == request.page_token:  # a server that would keep us here forever
            raise MailyardError("the service answered the same page again; listing stopped")
        request.page_token = token
