"""`mailyard log`: qmail's `current` log as a search (the queue's History service).

    mailyard log --address alice@example.com --since 1d    # what happened to alice's mail
    mailyard log --id 01J9Z...                             # one message, start to end
    mailyard log --follow --address bob@example.net        # tail -f, filtered
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import time
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from mailyard.api.history.v1 import history_pb2 as pb
from mailyard.api.history.v1 import history_pb2_grpc
from mailyard.cli.argtypes import UINT32, integer, timestamp
from mailyard.cli.endpoints import channel

_SPAN = re.compile(r"(\d+)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _stub() -> history_pb2_grpc.HistoryStub:
    return history_pb2_grpc.HistoryStub(channel("QUEUE"))


def parse_time(text: str, now: float | None = None) -> float:
    """'2h' / '3d' (ago), '2026-12-03', '2026-12-03T10:00' (UTC), or a Unix time."""
    text = text.strip()
    now = time.time() if now is None else now
    span = _SPAN.fullmatch(text)
    if span:
        return timestamp(now - int(span.group(1)) * _UNIT[span.group(2)])
    if text.isascii() and text.isdigit():
        return timestamp(float(text))
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give 30m, 2h, 1d, 2w, an ISO date (UTC) or a Unix time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return timestamp(when.timestamp())


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def line(e: pb.HistoryEvent) -> str:
    """One event as qmail's log said it, with the queue id instead of an inode number."""
    when = datetime.datetime.fromtimestamp(e.at.ToNanoseconds() / 1e9, datetime.UTC)
    head = f"{when:%Y-%m-%d %H:%M:%S.%f}"[:-3] + f"Z {e.queue_id} "
    if e.kind == "new":
        origin = f" {e.origin}" if e.origin and e.origin != "smtp" else ""
        client = f" from {e.client_ip}" if e.client_ip else ""
        to = " ".join(f"<{r}>" for r in e.recipients)
        return head + f"new msg: bytes {e.size} from <{e.sender.strip('<>')}>{client}" \
            f"{origin} to {to}"
    if e.kind == "delivery":
        host = f" [{e.remote_host}]" if e.remote_host else ""
        return head + f"delivery {e.channel} <{e.recipient}>: {e.result}{host}: {e.reply}"
    return head + e.kind + (f": {e.detail}" if e.detail else "")


def request(args: argparse.Namespace) -> pb.SearchRequest:
    req = pb.SearchRequest(queue_id=args.id or "", address=args.address or "",
                           limit=args.limit)
    if args.since is not None:
        req.since.CopyFrom(_ts(args.since))
    if args.until is not None:
        req.until.CopyFrom(_ts(args.until))
    return req


def cmd_log(args: argparse.Namespace) -> int:
    req = request(args)
    stub = _stub()
    if args.follow:
        for event in stub.Follow(req):
            if event.kind == "dropped":  # we read too slowly; the history has them all
                since = f"{event.at.ToDatetime():%Y-%m-%dT%H:%M:%S}"
                print(f"mailyard: {since}Z {event.detail} (`mailyard log --since {since}` "
                      "shows them)", file=sys.stderr, flush=True)
                continue
            print(line(event), flush=True)
        return 0
    resp = stub.Search(req, timeout=60)
    for event in resp.events:
        print(line(event))
    if resp.truncated:
        print(f"(more messages matched; showing the newest {req.limit or 100}: "
              "narrow with --since/--until or raise --limit)", file=sys.stderr)
    if resp.events_left_out:  # the answer is bounded (the queue's answer_bound)
        print(f"({resp.events_left_out} older step(s) left out to keep the answer small: "
              "narrow with --since/--until, --address or --id)", file=sys.stderr)
    if not resp.events and (args.id or args.address):
        print("mailyard: nothing recorded for that (history is kept HISTORY_DAYS days)",
              file=sys.stderr)
        return 1
    return 0


def show_finished(queue_id: str) -> bool:
    """For `queue explain` of a message no longer queued: print its history, if any."""
    resp = _stub().Search(pb.SearchRequest(queue_id=queue_id), timeout=30)
    events = resp.events
    if not events:
        return False
    print(f"queue id:  {queue_id}  (no longer queued; its history:)")
    if resp.events_left_out:
        print(f"  ... {resp.events_left_out} older step(s) left out")
    for event in events:
        print("  " + line(event))
    return True


def register(sub: Any) -> None:
    log = sub.add_parser("log", help="what happened to which mail (qmail's log, searchable)")
    log.add_argument("--id", metavar="QUEUE_ID", help="one message")
    log.add_argument("--address", metavar="ADDRESS", help="sender or recipient (any case; "
                     "<> for the null sender)")
    log.add_argument("--since", type=parse_time, metavar="WHEN",
                     help="30m, 2h, 1d, an ISO date (UTC); default: the last hour when "
                          "neither --id nor --address is given")
    log.add_argument("--until", type=parse_time, metavar="WHEN")
    log.add_argument("--limit", type=integer(0, UINT32), default=100, metavar="N",
                     help="messages shown, newest kept (default 100, at most 10000)")
    log.add_argument("--follow", "-f", action="store_true",
                     help="print new steps as they happen (Ctrl-C stops)")
    log.set_defaults(func=cmd_log)
