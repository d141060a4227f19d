"""`mailyard queue ...`: qmail-qstat, qmail-qread and the queue operator's tools (gRPC)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import grpc

from mailyard.api.mail.v1 import delivery_pb2 as dpb
from mailyard.api.queue.v1 import queue_pb2 as pb
from mailyard.api.queue.v1 import queue_pb2_grpc
from mailyard.cli import history
from mailyard.cli.argtypes import UINT32, integer
from mailyard.cli.endpoints import channel

STATES = {"queued": pb.RECIPIENT_STATE_QUEUED, "deferred": pb.RECIPIENT_STATE_DEFERRED,
          "delivered": pb.RECIPIENT_STATE_DELIVERED, "failed": pb.RECIPIENT_STATE_FAILED,
          "held": pb.RECIPIENT_STATE_HELD}
STATE_NAMES = {v: k for k, v in STATES.items()}
CHANNELS = {dpb.CHANNEL_LOCAL: "local", dpb.CHANNEL_REMOTE: "remote"}
OUTCOMES = {dpb.OUTCOME_DELIVERED: "delivered", dpb.OUTCOME_DEFERRED: "deferred",
            dpb.OUTCOME_FAILED: "failed"}


def _stub() -> queue_pb2_grpc.QueueServiceStub:
    return queue_pb2_grpc.QueueServiceStub(channel("QUEUE"))


def _age(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def _when(ts: Any) -> str:
    if not ts.seconds:
        return "-"
    return time.strftime("%d %b %Y %H:%M:%S GMT", time.gmtime(ts.seconds))


def cmd_stat(args: argparse.Namespace) -> int:
    r = _stub().Stat(pb.StatRequest(), timeout=10)
    print(f"messages in queue: {r.messages}")
    print(f"messages in queue but not yet preprocessed: {r.not_preprocessed}")
    for name in STATES:
        print(f"recipients {name}: {r.recipients_by_state.get(name, 0)}")
    print(f"messages held: {r.held_messages}")
    print(f"oldest message age: {_age(r.oldest_age_seconds) if r.messages else '-'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """qmail-send's status line, for the whole cluster."""
    r = _stub().Stat(pb.StatRequest(), timeout=10)
    print(f"status: local {r.local_in_progress}/{r.local_limit} "
          f"remote {r.remote_in_progress}/{r.remote_limit}")
    return 0


def cmd_read(args: argparse.Namespace) -> int:
    req = pb.ListRequest(sender=args.sender, recipient=args.recipient, domain=args.domain,
                         state=STATES.get(args.state, 0),  # type: ignore[arg-type]
                         page_size=args.limit, page_token=args.page_token)
    stub = _stub()
    while True:
        resp = stub.List(req, timeout=30)
        for m in resp.messages:
            held = "  (held)" if m.held else ""
            print(f"{_when(m.received_at)}  #{m.queue_id}  {m.size}  <{m.sender}>{held}")
            for r in m.recipients:
                print(f"\t{STATE_NAMES.get(r.state, '?'):9s} "
                      f"{CHANNELS.get(r.channel, '?'):6s}  {r.address}")
                if args.why and r.state in (pb.RECIPIENT_STATE_DEFERRED,
                                            pb.RECIPIENT_STATE_HELD):
                    print(f"\t\t{r.attempts} attempt(s), next {_when(r.next_attempt)}: "
                          f"{r.last_reply or '(no reply yet)'}")
        if not resp.next_page_token:
            return 0
        if not args.all_pages:
            print(f"(more: --page-token {resp.next_page_token})")
            return 0
        req.page_token = resp.next_page_token


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        d = _stub().Explain(pb.ExplainRequest(queue_id=args.queue_id), timeout=10)
    except grpc.RpcError as exc:
        # finished (delivered, bounced, deleted): what the history recorded
        if exc.code() == grpc.StatusCode.NOT_FOUND and history.show_finished(args.queue_id):
            return 0
        raise
    s = d.summary
    print(f"queue id:  {s.queue_id}{'  (held)' if s.held else ''}")
    print(f"sender:    <{s.sender}>")
    print(f"received:  {_when(s.received_at)}  size {s.size}  from {d.client_ip or '-'}"
          f"{'  auth ' + d.auth_user if d.auth_user else ''}")
    print(f"spool:     {d.spool_path}")
    for r in d.recipients:
        print(f"  <{r.address}>  {STATE_NAMES.get(r.state, '?')}  "
              f"{CHANNELS.get(r.channel, '?')}  attempts {r.attempts}")
        if r.HasField("next_attempt"):
            print(f"      next attempt: {_when(r.next_attempt)}")
        if r.last_reply:
            print(f"      last reply:   {r.last_reply}")
        if r.route:
            print(f"      route:        {r.route}")
    if d.recipients_left_out:  # the answer is bounded (queue.answer_bound)
        print(f"  ... and {d.recipients_left_out} recipient(s) more, not shown: "
              f"mailyard queue read --recipient ADDRESS --why")
    return 0


DESTRUCTIVE = ("Delete", "Bounce")


def _action(name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        if args.all and args.queue_ids:
            print(f"mailyard: queue {name.lower()}: name queue ids or --all, not both",
                  file=sys.stderr)
            return 2
        if not args.all and not args.queue_ids:
            print(f"mailyard: queue {name.lower()}: name queue ids (or --all)",
                  file=sys.stderr)
            return 2
        if args.all and name in DESTRUCTIVE and not args.yes:
            print(f"mailyard: queue {name.lower()} --all acts on every message in the "
                  "queue; add --yes if that is meant", file=sys.stderr)
            return 2
        req = pb.SelectRequest(queue_ids=args.queue_ids, recipient=args.recipient or "",
                               all=args.all)
        r = getattr(_stub(), name)(req, timeout=600)
        print(f"{name.lower()}: {r.messages} message(s), {r.recipients} recipient(s)")
        for qid in r.unknown_ids:
            print(f"mailyard: {qid}: not in queue", file=sys.stderr)
        return 1 if r.unknown_ids else 0
    return run


def cmd_fsck(args: argparse.Namespace) -> int:
    r = _stub().Fsck(pb.FsckRequest(dry_run=args.dry_run), timeout=600)
    for rep in r.repairs:
        print(f"{rep.kind}\t{rep.queue_id or '-'}\t{rep.action}\t{rep.detail}")
    mode = " (dry run)" if args.dry_run else ""
    print(f"checked {r.checked_files} file(s), {r.checked_messages} message(s); "
          f"{len(r.repairs)} finding(s){mode}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    for ev in _stub().Watch(pb.WatchRequest()):
        at = time.strftime("%H:%M:%S", time.gmtime(ev.at.seconds))
        if ev.kind == "dropped":  # we read too slowly: the server says where, and goes on
            print(f"mailyard: {at} {ev.reply}", file=sys.stderr, flush=True)
            continue
        parts = [at, ev.kind, ev.queue_id]
        if ev.recipient:
            parts += [CHANNELS.get(ev.channel, "?"), OUTCOMES.get(ev.outcome, "?"),
                      f"<{ev.recipient}>"]
        if ev.reply:
            parts.append(ev.reply)
        print("  ".join(parts), flush=True)
    return 0


def register(sub: Any) -> None:
    queue = sub.add_parser("queue", help="inspect and operate the mail queue")
    qsub = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")

    p = qsub.add_parser("stat", help="qmail-qstat: messages in queue, by state, oldest")
    p.set_defaults(func=cmd_stat)

    p = qsub.add_parser("status", help="qmail-send's status line: deliveries in progress "
                                       "and limits, local and remote, whole cluster")
    p.set_defaults(func=cmd_status)

    p = qsub.add_parser("read", aliases=["list"], help="qmail-qread: list messages")
    p.add_argument("--sender", default="", help="substring of the envelope sender")
    p.add_argument("--recipient", default="", help="substring of a recipient")
    p.add_argument("--domain", default="", help="a recipient's domain (exact)")
    p.add_argument("--state", default="", choices=["", *STATES])
    p.add_argument("--limit", type=integer(0, UINT32), default=100,
                   help="messages per page (max 1000)")
    p.add_argument("--page-token", default="")
    p.add_argument("--all-pages", action="store_true")
    p.add_argument("--why", action="store_true",
                   help="each waiting recipient's attempts, next attempt and last reply")
    p.set_defaults(func=cmd_read)

    p = qsub.add_parser("explain", help="per recipient: state, attempts, next retry, reply")
    p.add_argument("queue_id")
    p.set_defaults(func=cmd_explain)

    for name, help_text in (
            ("retry", "try deferred recipients now"),
            ("hold", "put messages aside (no deliveries)"),
            ("release", "release held messages (due now)"),
            ("delete", "drop messages without a bounce"),
            ("bounce", "fail messages now and bounce them to the sender")):
        p = qsub.add_parser(name, help=help_text + " (exit 1 if an id is not in queue)")
        p.add_argument("queue_ids", nargs="*", metavar="QUEUE-ID")
        p.add_argument("--recipient", default="", help="only this recipient")
        p.add_argument("--all", action="store_true", help="every message in queue")
        if name.capitalize() in DESTRUCTIVE:
            p.add_argument("--yes", action="store_true", help="confirm --all")
        p.set_defaults(func=_action(name.capitalize()), yes=False)

    p = qsub.add_parser("fsck", help="compare the spool with the queue state and repair")
    p.add_argument("--dry-run", action="store_true", help="report only")
    p.set_defaults(func=cmd_fsck)

    p = qsub.add_parser("watch", help="delivery events as they happen (tail -f)")
    p.set_defaults(func=cmd_watch)
