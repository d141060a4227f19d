"""The sender as greylisting's triplet sees it: one sender where an address rewritten per
day or per message would make a new triplet each time, greylisting a forwarder's
correspondents every day and a mailing list at every post. Only the key: the envelope is
never changed.

postgrey's do_sender_substitutions, lower-cased, and where we differ:
- a BATV tag is taken off (prvs=TAG=user, prvs=user=TAG as postgrey; also msprvs1= and
  btv1== and a user with "=" in it, VERP's, which postgrey's three-part test leaves alone);
- an SRS address stands for its author (SRS0=HHHH=TT=orig.example=user@fwd is
  user@orig.example, SRS1 likewise): its hash and day stamp change daily and postgrey keeps
  them. The client network still names the forwarder: no one passes as the author from
  elsewhere;
- the +extension is cut (postgrey's VERP rule: user+12345@);
- every run of digits becomes "#", not only a whole word (postgrey's \\b\\d+\\b): numbers
  glued to letters or "_" (msg12345, news_2024) are per message too, and two senders that
  differ only in a number, from one network to one recipient, may share a triplet at no cost.

Hostile input: any string gives a key, nothing raises (property tests)."""

from __future__ import annotations

import re

from mailyard.core.sender_author import author

_DIGITS = re.compile(r"[0-9]+")


def key_sender(sender: str) -> str:
    local, at, domain = author(sender.lower()).rpartition("@")
    if not at:
        return sender.lower()  # the null sender
    return f"{_DIGITS.sub('#', local.partition('+')[0])}@{domain}"
