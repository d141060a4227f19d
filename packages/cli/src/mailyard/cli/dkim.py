"""`mailyard dkim keygen|list|activate|retire`: our domains' DKIM keys.

    mailyard dkim keygen example.com                      # Ed25519, selector from the date
    mailyard dkim keygen example.com --type rsa --selector rsa2026
    mailyard dkim list
    mailyard dkim activate example.com s2                 # rotation: s2 signs from now on
    mailyard dkim retire example.com s1                   # once s1's mail has been delivered

The keys live in a folder (DKIM_DIR; `mailyard up` uses <data>/dkim) that only the signer
(smtp-ingress) reads; this command works on that folder directly and never prints a
private key, only the DNS records to publish.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from mailyard.core.dkimkeys import KEY_TYPES, DkimKeyError, KeyDir, check_name, zone_line

DEFAULT_DIR = "var/dkim"


def _dir(args: argparse.Namespace) -> KeyDir:
    return KeyDir(args.dir or os.environ.get("MAILYARD_INGRESS_DKIM_DIR") or DEFAULT_DIR)


def _keygen(args: argparse.Namespace) -> int:
    selector = args.selector or time.strftime(f"{args.type[:3]}%Y%m%d", time.gmtime())
    key, signs = _dir(args).create(args.domain, selector, args.type)
    print(zone_line(key))
    state = "signs now" if signs else \
        f"published only: run `mailyard dkim activate {key.domain} {key.selector}` " \
        "once the record is in DNS"
    print(f"# {key.key_type} key {key.selector} for {key.domain}: {state}", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    folder = _dir(args)
    keys, problems = folder.keys()
    signing = folder.signing()
    for key in keys:
        state = "signing" if (key.domain, key.selector) in signing else "published"
        print(f"{key.domain}\t{key.selector}\t{key.key_type}\t{state}\t{key.record_name}")
    for problem in problems:
        print(f"mailyard: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _record(args: argparse.Namespace) -> int:
    print(zone_line(_dir(args).find(check_name("domain", args.domain),
                                    check_name("selector", args.selector))))
    return 0


def _activate(args: argparse.Namespace) -> int:
    key = _dir(args).activate(args.domain, args.selector)
    print(f"{key.domain}: {key.key_type} key {key.selector} signs now")
    return 0


def _retire(args: argparse.Namespace) -> int:
    _dir(args).retire(args.domain, args.selector)
    print(f"{args.domain}: key {args.selector} deleted; remove its DNS record")
    return 0


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except (DkimKeyError, OSError) as exc:
            print(f"mailyard: {exc}", file=sys.stderr)
            return 1
    return run


def register(sub: Any) -> None:
    parser = sub.add_parser("dkim", help="DKIM keys of our domains (keygen, list, rotation)")
    parser.add_argument("--dir", default="", help=f"key folder (default $MAILYARD_INGRESS_"
                        f"DKIM_DIR or {DEFAULT_DIR})")
    actions = parser.add_subparsers(dest="dkim_command", required=True, metavar="ACTION")
    keygen = actions.add_parser("keygen", help="make a key and print its DNS TXT record")
    keygen.add_argument("domain")
    keygen.add_argument("--selector", default="", help="default: <type><yyyymmdd>")
    keygen.add_argument("--type", choices=KEY_TYPES, default="ed25519")
    keygen.set_defaults(func=_guard(_keygen))
    actions.add_parser("list", help="every key: domain, selector, type, state").set_defaults(
        func=_guard(_list))
    for name, func, text in (("record", _record, "print a key's DNS TXT record again"),
                             ("activate", _activate, "sign with this key from now on"),
                             ("retire", _retire, "delete a key that no longer signs")):
        action = actions.add_parser(name, help=text)
        action.add_argument("domain")
        action.add_argument("selector")
        action.set_defaults(func=_guard(func))
