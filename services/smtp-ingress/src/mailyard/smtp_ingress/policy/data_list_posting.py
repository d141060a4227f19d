"""A mailing list's posting policy, at the end of DATA: a message whose every recipient is
a members-only or announce list this sender may not post to is refused, 550 5.7.2, so the
poster hears it from its own server. Refused later, by local-delivery, it became our bounce
to the envelope sender, an address anyone can forge: a spammer "posting" to a list sent
its bounces to whoever it liked (backscatter). A message also addressed elsewhere is taken
(a reply at the end of DATA is for all its recipients); local-delivery refuses the list's
copy then, with a bounce, as it does for a list reached through an alias.

The poster counts as a member by its envelope sender or any address in From: (list_posting,
the same rules local-delivery applies). The directory view keeps the keys of the lists that
guard who posts: while there are none the check costs one test, and otherwise a key lookup
per recipient; a list's record (its members) is parsed only for its own address."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.core import list_posting
from mailyard.core.directory import canonical
from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    assert s.tx is not None and s.tx.body is not None
    directory = s.app.directory
    if not directory.guarded_lists:  # no list here keeps anyone from posting
        return ACCEPT
    refused = ""
    for rcpt in s.tx.recipients:
        try:
            address = directory.real_address(canonical(rcpt))
        except Exception:  # an address IDNA cannot encode is no list of ours
            return ACCEPT
        if not directory.guarded_list(address):
            return ACCEPT  # someone else (or an open list) is addressed: taken (see above)
        mlist = directory.mailing_list(address)
        why = mlist is not None and list_posting.refusal(
            mlist.posting, mlist.address, mlist.owner, mlist.members, mlist.posters,
            s.tx.sender.address, s.tx.body.head, directory.delimiters)
        if not why:
            return ACCEPT
        refused = refused or why
    return Verdict(replies.list_post_refused(refused), "list_posting") if refused else ACCEPT
