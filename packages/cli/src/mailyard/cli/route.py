"""`mailyard route`: control/smtproutes and the route mail for an address takes.

    mailyard route list
    mailyard route set example.com relay.example.net:2525 [--tls must] [--auth USER:FILE]
    mailyard route set .example.com relay.example.net        (every subdomain)
    mailyard route set : smarthost.example.net:587            (the default route)
    mailyard route set example.org ''                          (use MX despite a default)
    mailyard route del example.com
    mailyard route explain user@example.com [--probe]

set/del/list edit the control file through mailyard.control.v1.Control (directory service);
remote-delivery rereads it on every delivery. explain asks remote-delivery's Routing.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import grpc

from mailyard.api.control.v1 import control_pb2, control_pb2_grpc
from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.api.directory.v1 import directory_pb2_grpc
from mailyard.api.routing.v1 import routing_pb2, routing_pb2_grpc
from mailyard.cli.endpoints import channel
from mailyard.core import listaddresses, listcookie, smtproutes
from mailyard.core.smtproutes import RouteSyntaxError

FILE = "smtproutes"


def register(sub: Any) -> None:
    parser = sub.add_parser("route", help="smtproutes and remote routes",
                            description=__doc__.splitlines()[0])
    cmds = parser.add_subparsers(dest="route_command", required=True, metavar="ACTION")
    cmds.add_parser("list", help="print control/smtproutes").set_defaults(func=_list)
    p = cmds.add_parser("set", help="route DOMAIN (.DOMAIN for subdomains, : default)")
    p.add_argument("domain")
    p.add_argument("host", help="HOST[:PORT], [ADDRESS][:PORT], or '' to use MX")
    p.add_argument("--tls", choices=("none", "may", "must", "verify"))
    p.add_argument("--auth", metavar="USER:/PASSWORD/FILE",
                   help="AUTH to this host; the password stays in that file")
    p.add_argument("--remote-file", action="store_true",
                   help="the password file is on remote-delivery's host, not this one")
    p.set_defaults(func=_set)
    p = cmds.add_parser("del", help="remove the route of DOMAIN")
    p.add_argument("domain")
    p.set_defaults(func=_del)
    p = cmds.add_parser("explain", help="how mail for ADDRESS is routed right now")
    p.add_argument("address")
    p.add_argument("--probe", action="store_true",
                   help="connect to each host's SMTP port (exit 1 when none answers)")
    p.set_defaults(func=_explain)


def _line_key(line: str) -> str:
    """The key of a stored line; a line the grammar refuses still has the text before ':'."""
    key = smtproutes.line_key(line)
    return key if key is not None else line.split(maxsplit=1)[0].partition(":")[0].lower()


def _read() -> tuple[control_pb2_grpc.ControlStub, list[str]]:
    stub = control_pb2_grpc.ControlStub(channel("DIRECTORY"))
    try:
        text = stub.Get(control_pb2.GetRequest(name=FILE)).text
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        text = ""
    return stub, text.splitlines()


def _write(stub: control_pb2_grpc.ControlStub, lines: list[str]) -> None:
    text = "\n".join(lines) + ("\n" if lines else "")
    done = stub.Set(control_pb2.SetRequest(name=FILE, text=text))
    print(f"smtproutes version {done.version}")


def _meaningful(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _list(args: argparse.Namespace) -> int:
    _, lines = _read()
    for line in lines:
        if _meaningful(line):
            print(line.strip())
    return 0


def _set(args: argparse.Namespace) -> int:
    host = args.host.strip()
    if host.count(":") > 1 and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address
    user, _, path = (args.auth or "").partition(":")
    if args.auth and (not user or not path.startswith("/")):
        print("mailyard: --auth takes USER:/absolute/path/to/passwordfile", file=sys.stderr)
        return 2
    if args.auth and not args.remote_file and not os.access(path, os.R_OK):
        print(f"mailyard: --auth: cannot read {path} here (remote-delivery reads it at "
              "each delivery; if it exists only on remote-delivery's host, add "
              "--remote-file)", file=sys.stderr)
        return 2
    domain = "" if args.domain == ":" else args.domain
    try:
        key = smtproutes.parse_key(domain)
        smtproutes.parse_host(host)
        line = f"{key}:{host}" + (f" tls={args.tls}" if args.tls else "") + \
            (f" auth={user}:{path}" if args.auth else "")
        smtproutes.parse_line(line)  # the whole line, by the grammar remote-delivery reads
    except RouteSyntaxError as exc:
        print(f"mailyard: bad route: {exc}", file=sys.stderr)
        return 2
    stub, lines = _read()
    out, replaced = [], False
    for old in lines:
        if _meaningful(old) and _line_key(old) == key:
            if not replaced:
                out.append(line)
                replaced = True
            continue
        out.append(old)
    if not replaced:
        out.append(line)
    _write(stub, out)
    print(line)
    return 0


def _del(args: argparse.Namespace) -> int:
    try:
        key = smtproutes.parse_key("" if args.domain == ":" else args.domain)
    except RouteSyntaxError as exc:
        print(f"mailyard: bad route: {exc}", file=sys.stderr)
        return 2
    stub, lines = _read()
    kept = [line for line in lines if not (_meaningful(line) and _line_key(line) == key)]
    if len(kept) == len(lines):
        print(f"mailyard: no route for {args.domain!r}")
        return 1
    _write(stub, kept)
    return 0


_LOCAL_KINDS = {
    dpb.RESOLUTION_KIND_UNKNOWN: "no such user here (refused at RCPT with 550 5.1.1)",
    dpb.RESOLUTION_KIND_MAILBOX: "mailbox {mailbox}",
    dpb.RESOLUTION_KIND_ALIAS: "alias for {targets}",
    dpb.RESOLUTION_KIND_LIST: "mailing list to {targets}",
    dpb.RESOLUTION_KIND_CATCH_ALL: "catch-all: mailbox {mailbox}",
    dpb.RESOLUTION_KIND_BOUNCE: "no such user here, catch-all bounce (refused at RCPT with 550 "
                                "5.1.1)",
    dpb.RESOLUTION_KIND_DELETE: "catch-all deletes it",
    dpb.RESOLUTION_KIND_LIST_COMMAND: "command address of the list {resolved}, never posted "
                                      "(refused at RCPT with 550 5.7.1)",
}


def _local(address: str) -> bool:
    """A hosted domain never goes out by MX: say what local delivery does instead."""
    if not address.rpartition("@")[2]:
        return False  # remote-delivery explains what is wrong with it
    stub = directory_pb2_grpc.DirectoryStub(channel("DIRECTORY"))
    res = stub.Resolve(dpb.AddressRequest(address=address), timeout=10)
    if res.kind == dpb.RESOLUTION_KIND_NOT_LOCAL:
        return False
    what = _LOCAL_KINDS.get(res.kind, "local")
    if res.kind == dpb.RESOLUTION_KIND_LIST_COMMAND:
        what = _list_command(stub, res) or what
    print(f"domain: {address.rpartition('@')[2].lower()}")
    print("route:  local (a hosted domain: local-delivery, never MX)")
    print("        " + what.format(mailbox=res.mailbox, targets=", ".join(res.targets),
                                    resolved=res.resolved))
    return True


def _list_command(stub: Any, res: dpb.Resolution) -> str | None:
    """What smtp-ingress and local-delivery do with a list's command address they take (its
    -return, the subscribe commands of a list whose subscription is confirm), else None."""
    extension = listaddresses.extension(res.address, res.resolved)
    if listaddresses.is_return(extension):
        return (f"return address of the list {res.resolved}: taken and dropped (its "
                "confirmation requests bounce here)")
    if listcookie.parse(extension) is None:
        return None
    mlist = stub.GetList(dpb.AddressRequest(address=res.resolved), timeout=10)
    if mlist.subscription != dpb.SUBSCRIPTION_POLICY_CONFIRM:
        return None
    return (f"subscription command of the list {res.resolved} (subscription=confirm): a "
            "confirmation request or the change, by local-delivery")


def _explain(args: argparse.Namespace) -> int:
    if _local(args.address):
        return 0
    stub = routing_pb2_grpc.RoutingStub(channel("REMOTE"))
    out = stub.Explain(routing_pb2.ExplainRequest(address=args.address, probe=args.probe))
    print(f"domain: {out.domain}")
    print(f"route:  {out.source}" + (f" ({out.route_line})" if out.route_line else ""))
    if out.error:
        kind = "permanent" if out.permanent else "temporary"
        print(f"error:  {out.error} [{kind}]")
    for number, hop in enumerate(out.hops, 1):
        addresses = ", ".join(hop.addresses)
        print(f"{number}. {hop.host} (preference {hop.preference}) port {hop.port}: {addresses}")
        if hop.probed:
            state = "answers" if hop.answers else "does NOT answer"
            print(f"   {state} in {hop.probe_seconds:.2f}s: {hop.greeting}")
    if out.error:
        return 1
    if args.probe and not any(hop.answers for hop in out.hops):
        print("mailyard: no host answered", file=sys.stderr)
        return 1
    return 0
