"""What a vacation reply needs from the header of the message it answers (RFC 3834), read
from bytes a stranger wrote: never raises, and hands out only text that cannot carry a
line break or a header into the reply (the subject one clean line, message ids bare
`<...>` tokens).

Read only for a mailbox with an autoresponse turned on: every other delivery never comes
here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header

from mailyard.core.header_fields import CONTROLS as _CONTROLS
from mailyard.core.header_fields import addresses, unfolded

MAX_SUBJECT = 200   # characters of the original subject kept for "Re: ..."
MAX_REFERENCES = 10  # the newest ids of References kept, as mail readers trim them
# RFC 5322 msg-id as found in the wild: printable ASCII without spaces or angle brackets
_MSG_ID = re.compile(r"<[!-;=?-~]{1,250}>")
_SPACES = re.compile(r"[ \t]+")  # after _CONTROLS: a no-break space is text, kept


@dataclass
class Original:
    subject: str = ""
    message_id: str = ""
    references: list[str] = field(default_factory=list)  # for References:, oldest first
    auto_submitted: str = ""      # the keyword, lower case ("" = header absent)
    precedence: str = ""
    list_header: bool = False     # any List-* field (RFC 2369 / 2919)
    spam: bool = False            # X-Spam: Yes (smtp-ingress's scanner tag)
    recipients: set[str] = field(default_factory=set)  # To and Cc, canonical


def one_line(text: str, limit: int) -> str:
    """Control characters and runs of white space as one space; at most `limit`."""
    return _SPACES.sub(" ", _CONTROLS.sub(" ", text)).strip()[:limit].strip()


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # malformed encoded words: the raw text, still cleaned below
        return value


def _keyword(value: str) -> str:
    # "auto-replied; owner-email=..." or "bulk (comment)": the first word counts
    return re.split(r"[\s;(]", value.strip(), maxsplit=1)[0].lower()


def parse(data: bytes) -> Original:
    orig = Original()
    addressed: list[str] = []
    in_reply_to: list[str] = []
    for name, value in unfolded(data):
        if name == "subject" and not orig.subject:
            orig.subject = one_line(_decoded(value), MAX_SUBJECT)
        elif name == "message-id" and not orig.message_id:
            found = _MSG_ID.search(value)
            orig.message_id = found.group(0) if found else ""
        elif name == "references" and not orig.references:
            orig.references = _MSG_ID.findall(value)[-MAX_REFERENCES:]
        elif name == "in-reply-to" and not in_reply_to:
            in_reply_to = _MSG_ID.findall(value)[:1]
        elif name == "auto-submitted" and not orig.auto_submitted:
            orig.auto_submitted = _keyword(value) or "yes"
        elif name == "precedence" and not orig.precedence:
            orig.precedence = _keyword(value)
        elif name.startswith("list-"):
            orig.list_header = True
        elif name == "x-spam":
            orig.spam = orig.spam or _keyword(value) == "yes"
        elif name in ("to", "cc"):
            addressed.append(value)
    # RFC 5322 3.6.4: without References, the parent's In-Reply-To stands for them
    orig.references = orig.references or in_reply_to
    orig.recipients = addresses(addressed)
    return orig
