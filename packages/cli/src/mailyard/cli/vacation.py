"""`mailyard vacation set|clear|show`: a mailbox's vacation message (QmailAdmin's
autoresponder, qmail-autoresponder), sent by local-delivery as RFC 3834 says:

    mailyard vacation set joe@example.com --subject "Away" --body-file away.txt \\
        --from 2030-07-01 --until 2030-07-15
    mailyard vacation set joe@example.com --body-file - --off < away.txt   # kept, not sent
    mailyard vacation show joe@example.com
    mailyard vacation clear joe@example.com

`show` (and set, clear) print one line, address, on/off/none, subject and times, then the
body as it is stored.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.directory.v1 import directory_pb2_grpc as pb_grpc
from mailyard.cli.endpoints import channel


def _stub() -> pb_grpc.DirectoryStub:
    return pb_grpc.DirectoryStub(channel("DIRECTORY"))


def _when(text: str) -> datetime:
    """An ISO 8601 date or time; without a zone it is UTC (the platform's clock)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date or time (2030-07-15, 2030-07-15T08:00+02:00): {text!r}"
            ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def iso_time(ts: Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _show(address: str, auto: pb.Autoresponse) -> None:
    if not auto.body:
        print(f"{address}\tnone")
        return
    fields = [address, "on" if auto.enabled else "off",
              f"subject={auto.subject or '(Re: original)'}"]
    if auto.HasField("start"):
        fields.append(f"from={iso_time(auto.start)}")
    if auto.HasField("end"):
        fields.append(f"until={iso_time(auto.end)}")
    print("\t".join(fields))
    print(auto.body, end="" if auto.body.endswith("\n") else "\n")


def _set(args: argparse.Namespace) -> int:
    if args.body is not None:
        body = args.body
    elif args.body_file == "-":
        body = sys.stdin.read()
    else:
        with open(args.body_file, encoding="utf-8") as file:
            body = file.read()
    auto = pb.Autoresponse(enabled=not args.off, subject=args.subject, body=body)
    if args.start is not None:
        auto.start.FromDatetime(args.start)
    if args.end is not None:
        auto.end.FromDatetime(args.end)
    mailbox = _stub().SetAutoresponse(pb.SetAutoresponseRequest(address=args.address,
                                                                autoresponse=auto))
    _show(mailbox.address, mailbox.autoresponse)
    return 0


def _clear(args: argparse.Namespace) -> int:
    mailbox = _stub().ClearAutoresponse(pb.AddressRequest(address=args.address))
    _show(mailbox.address, mailbox.autoresponse)
    return 0


def _get(args: argparse.Namespace) -> int:
    auto = _stub().GetAutoresponse(pb.AddressRequest(address=args.address))
    _show(args.address.strip().lower(), auto)
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("vacation", help="a mailbox's vacation message (autoresponder)")
    actions = parser.add_subparsers(dest="vacation_command", required=True, metavar="ACTION")
    cmd = actions.add_parser("set", help="set (replace) the vacation message")
    cmd.set_defaults(func=_set)
    cmd.add_argument("address")
    text = cmd.add_mutually_exclusive_group(required=True)
    text.add_argument("--body", help="the reply's text")
    text.add_argument("--body-file", metavar="FILE", help="the reply's text from FILE "
                      "('-': stdin), UTF-8")
    cmd.add_argument("--subject", default="",
                     help="the reply's subject (default: Re: and the original subject)")
    cmd.add_argument("--from", dest="start", type=_when, metavar="WHEN",
                     help="send from then on (ISO 8601; without a zone UTC)")
    cmd.add_argument("--until", dest="end", type=_when, metavar="WHEN",
                     help="send until then (excluded)")
    cmd.add_argument("--off", action="store_true", help="store it, but do not send it")
    for name, func, help_text in (("clear", _clear, "remove the vacation message"),
                                  ("show", _get, "the vacation message")):
        cmd = actions.add_parser(name, help=help_text)
        cmd.set_defaults(func=func)
        cmd.add_argument("address")
