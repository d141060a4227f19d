"""`mailyard auth tokens`: a new token table for the admin plane (mailyard.core.auth).

    mailyard auth tokens > tokens && chmod 600 tokens     # then a Secret, or TOKENS_FILE

One line per role (admin, read, ingress, bridge, relayauth, listmail), each token 256 random bits.
Printed, never stored by this command: where it goes is the operator's choice.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mailyard.core import auth


def cmd_tokens(args: argparse.Namespace) -> int:
    unknown = [r for r in args.roles if r not in auth.ROLES]
    if unknown:
        print(f"mailyard: unknown role {unknown[0]!r} (one of {', '.join(auth.ROLES)})",
              file=sys.stderr)
        return 2
    print("# mailyard admin-plane tokens: ROLE TOKEN (keep secret)")
    for role in args.roles or auth.ROLES:
        print(f"{role} {auth.new_token()}")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("auth", help="admin-plane credentials (token tables)")
    actions = parser.add_subparsers(dest="auth_command", required=True, metavar="ACTION")
    p = actions.add_parser("tokens", help="print a new token table (one line per role)")
    p.add_argument("roles", nargs="*", metavar="ROLE",
                   help=f"only these roles (default all: {', '.join(auth.ROLES)})")
    p.set_defaults(func=cmd_tokens)
