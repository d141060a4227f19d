"""Who may post to a mailing list: its posting policy (open, members, announce). Asked by
smtp-ingress at the end of DATA (data_list_posting), where a refusal reaches the poster
through its own server, and by local-delivery for what that did not refuse (a message
also addressed elsewhere, a list reached through an alias), where it becomes a bounce."""

from __future__ import annotations

from collections.abc import Sequence

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core import header_fields, listaddresses
from mailyard.core.directory import canonical

NOT_MEMBER = "Sorry, only members of {list} may post to it; write to {owner}. (#5.7.2)"
NOT_POSTER = "Sorry, only the owner of {list} may post to it; write to {owner}. (#5.7.2)"


def refusal(posting: int, list_address: str, owner: str, members: Sequence[str],
            posters: Sequence[str], sender: str, data: bytes, delimiters: str) -> str | None:
    """Why this sender may not post to the list (its posting policy), or None. The envelope
    sender or any address in From: counts, as with Mailman: a member posting through a
    mailer that sends from a bounce address (VERP, SRS) is still a member. Asked only of
    lists that are not open; the header is read only when the envelope sender is not
    enough."""
    if posting not in (pb.POSTING_POLICY_MEMBERS, pb.POSTING_POLICY_ANNOUNCE):
        return None
    allowed = [a for a in (owner, *posters) if a]
    if posting == pb.POSTING_POLICY_MEMBERS:
        allowed += members
    if _listed(allowed, {_key(sender)} if sender else set()):
        return None
    from_ = header_fields.addresses([v for n, v in header_fields.unfolded(data) if n == "from"])
    if _listed(allowed, from_):
        return None
    text = NOT_MEMBER if posting == pb.POSTING_POLICY_MEMBERS else NOT_POSTER
    return text.format(list=list_address,
                       owner=listaddresses.owner_command(list_address, delimiters, owner))


def _key(address: str) -> str:
    # canonical() is the lower-cased form for ASCII; spared for the thousands of members
    try:
        return address.lower() if address.isascii() else canonical(address)
    except Exception:  # an address IDNA cannot encode is nobody's
        return ""


def _listed(allowed: list[str], candidates: set[str]) -> bool:
    candidates.discard("")
    return bool(candidates) and any(_key(a) in candidates for a in allowed)
