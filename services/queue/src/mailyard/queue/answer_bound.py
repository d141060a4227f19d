"""Explain's answer and History Search's within EXPLAIN_BYTES and SEARCH_BYTES, List's
pages within about PAGE_BYTES, whatever the messages hold.

Every recipient's last reply is in it twice (the summary and the details) and a remote may
answer 32 KB (aiosmtplib's MAX_RESPONSE_LENGTH): 100 recipients deferred that way made an
answer past gRPC's 4 MiB, and a client with gRPC's default receive limit (grpcurl, a
script; not the CLI, which takes any size) got RESOURCE_EXHAUSTED instead of the message.
Past the bound each long reply keeps its head (the code, the enhanced code and the reason
come first), then, for thousands of recipients, the last ones are left out; the answer
says how many of each (replies_cut, recipients_left_out). A page of List holds fewer
messages than page_size past PAGE_BYTES (AIP-158 allows it; the next page starts after its
last message), and one message alone has its replies cut the same way. A search of the
history holds every attempt's reply: past SEARCH_BYTES the replies are cut, then the oldest
events left out (replies_cut, events_left_out; the newest are what `mailyard log` is for).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mailyard.api.history.v1 import history_pb2 as hpb
from mailyard.api.queue.v1 import queue_pb2 as pb
from mailyard.core.paging import PAGE_BYTES

EXPLAIN_BYTES = 1 << 20  # a quarter of gRPC's 4 MiB; the HTTP twin's JSON stays small too
SEARCH_BYTES = 1 << 20
MIN_REPLY = 1024  # characters a cut reply keeps at least
_FIELD = 8  # bytes a repeated field costs beside its content (tag and length), at most


def cut(reply: str, keep: int) -> str:
    return f"{reply[:keep]} [{keep} of {len(reply)} characters]"


def _share(recipients: int, limit: int) -> int:
    """Characters each reply may keep for `recipients` replies to fill half of `limit`."""
    return max(MIN_REPLY, limit // (2 * max(recipients, 1)))


def cut_replies(recipients: Sequence[pb.RecipientSummary | pb.RecipientDetail],
                keep: int) -> list[bool]:
    """Each reply longer than `keep` characters cut to its head; which ones were."""
    was_cut = [len(r.last_reply) > keep + 40 for r in recipients]  # room for the note
    for r, shorten in zip(recipients, was_cut, strict=True):
        if shorten:
            r.last_reply = cut(r.last_reply, keep)
    return was_cut


def history(resp: hpb.SearchResponse, limit: int = SEARCH_BYTES) -> None:
    """Cut a history search's answer down to `limit` bytes, in place."""
    if resp.ByteSize() <= limit:
        return
    events = resp.events
    keep = _share(len(events), limit)
    was_cut = [len(e.reply) > keep + 40 for e in events]
    for e, shorten in zip(events, was_cut, strict=True):
        if shorten:
            e.reply = cut(e.reply, keep)
    if resp.ByteSize() > limit:
        left = limit - 2 * _FIELD - (resp.ByteSize() - sum(e.ByteSize() for e in events))
        first = len(events)  # the oldest event kept
        while first and left - events[first - 1].ByteSize() - _FIELD >= 0:
            first -= 1
            left -= events[first].ByteSize() + _FIELD
        del events[:first]
        del was_cut[:first]
        resp.events_left_out = first
    resp.replies_cut = sum(was_cut)


def page(summaries: Iterable[pb.MessageSummary], token: str) -> pb.ListResponse:
    """A List page of these summaries (in order), their next_page_token `token`: ended
    early past PAGE_BYTES, with the last message it holds as the token."""
    out = pb.ListResponse()
    used = 0
    for summary in summaries:
        if summary.ByteSize() > PAGE_BYTES:
            cut_replies(summary.recipients, _share(len(summary.recipients), PAGE_BYTES))
        size = summary.ByteSize()
        if out.messages and used + size > PAGE_BYTES:
            out.next_page_token = out.messages[-1].queue_id
            return out
        out.messages.append(summary)
        used += size
    out.next_page_token = token
    return out


def bound(detail: pb.MessageDetail, limit: int = EXPLAIN_BYTES) -> None:
    """Cut `detail` (built by admin.explain, the summary's recipients in the same order as
    the details) down to `limit` bytes, in place."""
    if detail.ByteSize() <= limit:
        return
    pairs = list(zip(detail.recipients, detail.summary.recipients, strict=True))
    keep = _share(2 * len(pairs), limit)  # each reply is there twice
    was_cut = cut_replies(detail.recipients, keep)
    cut_replies(detail.summary.recipients, keep)
    detail.replies_cut = sum(was_cut)
    if detail.ByteSize() <= limit:
        return
    left = limit - 2 * _FIELD  # for the counts
    left -= detail.ByteSize() - sum(f.ByteSize() + s.ByteSize() for f, s in pairs)
    kept = 0
    for full, short in pairs:
        left -= full.ByteSize() + short.ByteSize() + 2 * _FIELD
        if left < 0:
            break
        kept += 1
    detail.replies_cut = sum(was_cut[:kept])
    del detail.recipients[kept:]
    del detail.summary.recipients[kept:]
    detail.recipients_left_out = len(pairs) - kept
