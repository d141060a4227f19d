"""The fields of a list copy (RFC 2369, RFC 2919, Precedence: list) and the loop guard on
them: a message that carries this list's List-Id, or ezmlm's Mailing-List: naming it, has
been through the list already and is not posted again (ezmlm-send's check).

Fields are only added on top, the body untouched: a DKIM signature stays valid unless it
signed a List-* field the message did not have. Another list's fields stay (a list that is
a member of another keeps the first one's set). Read only for list mail.
"""

from __future__ import annotations

import re

from mailyard.core import listaddresses, listcookie
from mailyard.core.addresses import split

# unfolding (RFC 5322 2.2.3) before the fields are looked at
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_FIELD = re.compile(rb"^(list-id|mailing-list)[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_ANGLE = re.compile(rb"<([^<>]*)>")
# what separates addresses in a Mailing-List value; split on (not searched for: a search
# for local@domain backtracks in quadratic time over a long run without an "@")
_SEPARATORS = re.compile(rb"[\s<>;,:\"()]+")

LOOP = "This message has been through the list {list} already; not posted again. (#5.4.6)"
# a refused post whose sender nothing vouched for (Envelope.sender_unverified): recorded
# as done with the refusal in it, not bounced to an address that may be forged
DISCARDED = "discarded, not bounced (neither SPF nor DKIM verified the sender): {why}"


def list_id(list_address: str) -> str:
    """RFC 2919's list-label.namespace: news@example.com is <news.example.com>."""
    local, domain = split(list_address)
    return f"{local}.{domain}"


def went_through(header: bytes, list_address: str) -> bool:
    """Has the message with this header been sent by the list already?"""
    label = list_id(list_address).lower().encode()
    local, domain = (part.lower().encode() for part in split(list_address))
    for match in _FIELD.finditer(_FOLD.sub(b"", header)):
        name, value = match.group(1).lower(), match.group(2).lower()
        if name == b"list-id":
            if any(m.group(1).strip() == label for m in _ANGLE.finditer(value)):
                return True
            continue
        for address in _SEPARATORS.split(value):
            at_local, _, at_domain = address.rpartition(b"@")
            # news@ itself or one of its command addresses (news-help@, news-return-...@)
            if at_domain == domain and at_local.startswith(local) and (
                    len(at_local) == len(local)
                    or not at_local[len(local):len(local) + 1].isalnum()):
                return True
    return False


def fields(list_address: str, owner: str, delimiters: str, eol: bytes,
           by_mail: bool = False) -> bytes:
    """The fields put on top of every copy of the list's mail. `by_mail`: the list takes
    subscriptions by mail (subscribe.py), so List-Unsubscribe is its -unsubscribe address,
    which a mail reader's "unsubscribe" button can use without a human."""
    help_to = listaddresses.owner_command(list_address, delimiters, owner)
    leave = f"{help_to}?subject=unsubscribe"
    join: tuple[str, ...] = ()
    if by_mail and delimiters:
        leave, subscribe = (listcookie.command_address(list_address, delimiters[0], action)
                            for action in (listcookie.UNSUBSCRIBE, listcookie.SUBSCRIBE))
        join = (f"List-Subscribe: <mailto:{subscribe}>",)
    lines = (f"List-Id: <{list_id(list_address)}>",
             f"List-Post: <mailto:{list_address}>",
             f"List-Help: <mailto:{help_to}?subject=help>",
             f"List-Unsubscribe: <mailto:{leave}>",
             *join,
             f"List-Owner: <mailto:{help_to}>",
             "Precedence: list")
    return b"".join(line.encode() + eol for line in lines)
