"""`mailyard lease|rules|relay`: POP-before-SMTP leases, tcp.smtp, and "may this IP relay?".

    mailyard lease grant 192.0.2.7 --user alice@example.org [--ttl 3600]
    mailyard lease revoke 192.0.2.7
    mailyard lease list
    mailyard rules import tcp.smtp        # or - for stdin (tcprules ... < tcp.smtp)
    mailyard rules show
    mailyard relay check 192.0.2.7

Output is plain text, one record per line, fields as key=value, so it greps.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.api.relayauth.v1 import relayauth_pb2_grpc as pb_grpc
from mailyard.cli import pages
from mailyard.cli.endpoints import channel
from mailyard.core.relaypolicy import MAX_LEASE_TTL

_DECIDER = {pb.DECIDER_RULE: "rule", pb.DECIDER_LEASE: "lease",
            pb.DECIDER_DEFAULT: "default", pb.DECIDER_UNSPECIFIED: "-"}


def _stub() -> pb_grpc.RelayAuthStub:
    return pb_grpc.RelayAuthStub(channel("RELAYAUTH"))


def _when(ts: Timestamp) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")


def _yn(value: bool) -> str:
    return "yes" if value else "no"


def _env(env: Any) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(env.items()))


# -- lease --------------------------------------------------------------------------------

def _lease_line(lease: pb.Lease) -> str:
    return (f"{lease.ip}\tuser={lease.user}\tgranted={_when(lease.granted_at)}"
            f"\texpires={_when(lease.expires_at)}\tsource={lease.source or 'manual'}")


def _grant(args: argparse.Namespace) -> int:
    req = pb.GrantLeaseRequest(ip=args.ip, user=args.user)
    if args.ttl is not None:
        if not 0 < args.ttl <= MAX_LEASE_TTL:  # a number past int64 could not even be sent
            print(f"mailyard: --ttl must be between 1 and {MAX_LEASE_TTL} seconds (366 days)",
                  file=sys.stderr)
            return 2
        req.ttl.CopyFrom(Duration(seconds=args.ttl))
    print("granted " + _lease_line(_stub().GrantLease(req)))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if _stub().RevokeLease(pb.RevokeLeaseRequest(ip=args.ip)).revoked:
        print(f"revoked {args.ip}")
        return 0
    print(f"no lease for {args.ip}")
    return 1


def _list(args: argparse.Namespace) -> int:
    count = 0
    for lease in pages.records(_stub().ListLeases, pb.ListLeasesRequest(), "leases"):
        print(_lease_line(lease))
        count += 1
    print(f"# {count} active lease(s)", file=sys.stderr)
    return 0


# -- rules --------------------------------------------------------------------------------

def _import(args: argparse.Namespace) -> int:
    if args.file == "-":
        text = sys.stdin.read()
    else:
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read()
    rules = _stub().ImportRules(pb.ImportRulesRequest(text=text))
    print(f"imported tcp.smtp\trules={len(rules.rules)}\tversion={rules.version}")
    return 0


def _show(args: argparse.Namespace) -> int:
    rules = _stub().ShowRules(pb.ShowRulesRequest())
    # A header comment keeps the output a valid tcp.smtp (show > file; import file).
    print(f"# tcp.smtp version={rules.version} rules={len(rules.rules)}")
    sys.stdout.write(rules.text if rules.text.endswith("\n") or not rules.text
                     else rules.text + "\n")
    return 0


# -- relay check --------------------------------------------------------------------------

def _check(args: argparse.Namespace) -> int:
    r = _stub().CheckClient(pb.CheckClientRequest(ip=args.ip))
    if not r.allow_connect:
        decision = "deny"
    elif r.allow_relay:
        decision = "relay"
    else:
        decision = "allow"
    fields = [
        f"{args.ip}", f"decision={decision}", f"connect={_yn(r.allow_connect)}",
        f"relay={_yn(r.allow_relay)}", f"dnsbl_exempt={_yn(r.dnsbl_exempt)}",
        f"decided_by={_DECIDER.get(r.decided_by, '-')}",
        f"rule={r.rule if r.decided_by != pb.DECIDER_DEFAULT else '-'}",
        f"lease_user={r.lease_user or '-'}", f"auth_throttled={_yn(r.auth_throttled)}",
        f"version={r.rule_version}",
    ]
    if r.env:
        fields.append(f"env={_env(r.env)}")
    print("\t".join(fields))
    return 0


def register(sub: Any) -> None:
    lease = sub.add_parser("lease", help="POP-before-SMTP relay leases (open-smtp)")
    actions = lease.add_subparsers(dest="lease_command", required=True, metavar="ACTION")
    grant = actions.add_parser("grant", help="let IP relay for a while (refreshes a lease)")
    grant.add_argument("ip")
    grant.add_argument("--user", required=True, help="who logged in from IP")
    grant.add_argument("--ttl", type=int, default=None, metavar="SECONDS",
                       help="lease length (default: the service's LEASE_TTL, 3 hours)")
    grant.set_defaults(func=_grant)
    revoke = actions.add_parser("revoke", help="end IP's lease now")
    revoke.add_argument("ip")
    revoke.set_defaults(func=_revoke)
    actions.add_parser("list", help="active leases").set_defaults(func=_list)

    rules = sub.add_parser("rules", help="relay rules (tcp.smtp, tcprules syntax)")
    ractions = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    imp = ractions.add_parser("import", help="validate and activate a tcp.smtp (FILE or -)")
    imp.add_argument("file", metavar="FILE")
    imp.set_defaults(func=_import)
    ractions.add_parser("show", help="print the active tcp.smtp").set_defaults(func=_show)

    relay = sub.add_parser("relay", help="relay decisions")
    cactions = relay.add_subparsers(dest="relay_command", required=True, metavar="ACTION")
    check = cactions.add_parser("check", help="what smtp-ingress is told about IP")
    check.add_argument("ip")
    check.set_defaults(func=_check)
