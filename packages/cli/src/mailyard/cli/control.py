"""`mailyard control list|get|set|del`: qmail's control/ files, kept in JetStream KV.

    mailyard control set databytes 20000000      # echo 20000000 > control/databytes
    mailyard control set rcpthosts a.example b.example
    mailyard control set smtproutes < smtproutes
    mailyard control get smtproutes
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mailyard.api.control.v1 import control_pb2 as pb
from mailyard.api.control.v1 import control_pb2_grpc as pb_grpc
from mailyard.cli.endpoints import channel


def _stub() -> pb_grpc.ControlStub:
    return pb_grpc.ControlStub(channel("DIRECTORY"))


def _when(file: pb.ControlFile) -> str:
    if not file.HasField("updated_at"):
        return "-"
    return file.updated_at.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")


def _list(args: argparse.Namespace) -> int:
    for file in _stub().List(pb.ListRequest()).files:
        print(f"{file.name}\t{file.version}\t{_when(file)}")
    return 0


def _get(args: argparse.Namespace) -> int:
    sys.stdout.write(_stub().Get(pb.GetRequest(name=args.name)).text)
    return 0


def _set(args: argparse.Namespace) -> int:
    text = "\n".join(args.values) + "\n" if args.values else sys.stdin.read()
    file = _stub().Set(pb.SetRequest(name=args.name, text=text))
    print(f"set {file.name}\tversion={file.version}")
    return 0


def _del(args: argparse.Namespace) -> int:
    file = _stub().Delete(pb.GetRequest(name=args.name))
    print(f"deleted {file.name}")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("control", help="qmail control files (databytes, smtproutes, ...)")
    actions = parser.add_subparsers(dest="control_command", required=True, metavar="ACTION")
    actions.add_parser("list", help="list control files and their versions").set_defaults(
        func=_list)
    get = actions.add_parser("get", help="print a control file")
    get.add_argument("name")
    get.set_defaults(func=_get)
    put = actions.add_parser("set", help="replace a control file (VALUE lines, or stdin)")
    put.add_argument("name")
    put.add_argument("values", nargs="*", metavar="VALUE")
    put.set_defaults(func=_set)
    delete = actions.add_parser("del", help="delete a control file (services use defaults)")
    delete.add_argument("name")
    delete.set_defaults(func=_del)
