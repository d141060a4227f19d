"""Explain's answer within EXPLAIN_BYTES, whatever the message holds.

Every recipient's last reply is in it twice (the summary and the details) and a remote may
answer 32 KB (aiosmtplib's MAX_RESPONSE_LENGTH): 100 recipients deferred that way made an
answer past gRPC's 4 MiB, and the operator got RESOURCE_EXHAUSTED instead of the message.
Past the bound each long reply keeps its head (the code, the enhanced code and the reason
come first), then, for thousands of recipients, the last ones are left out; the answer
says how many of each (replies_cut, recipients_left_out).
"""

from __future__ import annotations

from mailyard.api.queue.v1 import queue_pb2 as pb

EXPLAIN_BYTES = 1 << 20  # a quarter of gRPC's 4 MiB; the HTTP twin's JSON stays small too
MIN_REPLY = 1024  # characters a cut reply keeps at least
_FIELD = 8  # bytes a repeated field costs beside its content (tag and length), at most


def cut(reply: str, keep: int) -> str:
    return f"{reply[:keep]} [{keep} of {len(reply)} characters]"


def bound(detail: pb.MessageDetail, limit: int = EXPLAIN_BYTES) -> None:
    """Cut `detail` (built by admin.explain, the summary's recipients in the same order as
    the details) down to `limit` bytes, in place."""
    if detail.ByteSize() <= limit:
        return
    pairs = list(zip(detail.recipients, detail.summary.recipients, strict=True))
    # each reply's share of half the answer (it is there twice)
    keep = max(MIN_REPLY, limit // (4 * len(pairs)))
    was_cut = [len(full.last_reply) > keep + 40 for full, _ in pairs]  # the note's room
    for (full, short), shorten in zip(pairs, was_cut, strict=True):
        if shorten:
            full.last_reply = short.last_reply = cut(full.last_reply, keep)
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
