"""BATV (Bounce Address Tag Validation, draft-levine-smtp-batv): a domain that signs its
envelope senders puts a tag before the local part, prvs=TAG=user@example.org, with TAG
K DDD SSSSSS (key number, day, hash), so the address changes every day. Seen in the field
also as prvs=user=TAG (early implementations, as postgrey notes), msprvs1=TAG=user and
btv1==TAG==user (Barracuda).

We sign nothing and check no tag: this only finds the user behind one, for rules that must
see one sender where the tag makes a new address daily (mailyard.core.sender_author)."""

from __future__ import annotations

import re

_PREFIX = re.compile(r"(?:ms)?prvs[0-9]?=|btv[0-9]?=", re.IGNORECASE)
_PRVS_TAG = re.compile(r"[0-9]{4}[0-9a-f]{6}", re.IGNORECASE)


def original_local(local: str) -> str:
    """The local part a BATV local part carries, `local` itself when it is none."""
    prefix = _PREFIX.match(local)
    if prefix is None:  # nearly every sender: one failed match
        return local
    tag, sep, rest = local[prefix.end():].lstrip("=").partition("=")
    rest = rest.lstrip("=")
    if not (sep and tag and rest):
        return local
    # prvs=user=TAG: the tag is the part that looks like one (postgrey's test, with the
    # draft's K DDD SSSSSS: postgrey's "10 alphanumerics" takes a user such as "newsletter")
    if _PRVS_TAG.fullmatch(rest) and not _PRVS_TAG.fullmatch(tag):
        return tag
    return rest
