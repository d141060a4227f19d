"""`mailyard delimiter`: address extensions (Postfix's recipient_delimiter, qmail's
user-ext): joe+news@example.com reaches joe@example.com when no joe+news@ exists.

    mailyard delimiter show          # "+" until set: Postfix's default
    mailyard delimiter set -         # qmail's
    mailyard delimiter set +-        # both, each a delimiter ("-" first: set -- -+)
    mailyard delimiter off
"""

from __future__ import annotations

import argparse
from typing import Any

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.directory.v1 import directory_pb2_grpc as pb_grpc
from mailyard.cli.endpoints import channel


def _stub() -> pb_grpc.DirectoryStub:
    return pb_grpc.DirectoryStub(channel("DIRECTORY"))


def _shown(settings: pb.Settings) -> str:
    return settings.recipient_delimiter or "off"


def _show(args: argparse.Namespace) -> int:
    print(_shown(_stub().GetSettings(pb.GetSettingsRequest())))
    return 0


def _set(args: argparse.Namespace, value: str) -> int:
    settings = _stub().SetRecipientDelimiter(
        pb.SetRecipientDelimiterRequest(recipient_delimiter=value))
    print(f"recipient delimiter: {_shown(settings)}")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("delimiter", help="address extensions: joe+news@ reaches joe@ "
                                              "(recipient_delimiter)")
    actions = parser.add_subparsers(dest="delimiter_command", required=True,
                                    metavar="ACTION")
    actions.add_parser("show", help="the delimiter characters, or off").set_defaults(
        func=_show)
    p = actions.add_parser("set", help="each character given separates an extension")
    p.add_argument("characters", metavar="CHARACTERS")
    p.set_defaults(func=lambda args: _set(args, args.characters))
    actions.add_parser("off", help="no extensions: joe+news@ is only ever itself"
                       ).set_defaults(func=lambda args: _set(args, ""))
