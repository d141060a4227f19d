"""`mailyard up` (everything in the foreground, Ctrl-C stops it) and `mailyard status`."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
import urllib.request
from typing import Any

from mailyard.cli.endpoints import PORTS, Ports
from mailyard.cli.mailuser import MailUser
from mailyard.cli.platform import Platform, default_ingress_replicas
from mailyard.core.identity import hostname_problem
from mailyard.mail_access import dovecot_conf


def register(sub: Any) -> None:
    up = sub.add_parser("up", help="run the whole platform on 127.0.0.1 until Ctrl-C")
    up.add_argument("--data", default="var", help="folder for all data (default ./var)")
    up.add_argument("--remote-replicas", type=int, default=1, metavar="N",
                    help="remote-delivery processes (default 1)")
    up.add_argument("--ingress-replicas", type=int, default=default_ingress_replicas(),
                    metavar="N", help="smtp-ingress processes sharing the SMTP ports "
                                      "(default: one per core, at most 4)")
    up.add_argument("--ports", type=_ports, default=PORTS, metavar="NAME=PORT,...",
                    help="override default ports, e.g. smtp=2526,nats=4223 (a second "
                         "instance needs every port changed); names: "
                         + ", ".join(f.name for f in dataclasses.fields(Ports)))
    up.add_argument("--nats-sync-always", action="store_true",
                    help="fsync every JetStream write (sync_interval: always)")
    up.add_argument("--me", metavar="HOSTNAME",
                    help="this platform's name (control/me: greeting, Received:, bounces); "
                         "kept in control/me, so later runs remember it")
    up.add_argument("--mail-user", default="", metavar="USER",
                    help="owner of mail files, as local-delivery writes them and Dovecot "
                         "serves them (default: you; as root, the system user 'mail')")
    up.add_argument("--no-dovecot", action="store_true",
                    help="do not start Dovecot (IMAP/POP3) even when it is installed")
    up.set_defaults(func=cmd_up)
    status = sub.add_parser("status", help="is every service of `mailyard up` ready?")
    status.set_defaults(func=cmd_status)


def _ports(text: str) -> Ports:
    changes: dict[str, int] = {}
    names = {f.name for f in dataclasses.fields(Ports)}
    for item in filter(None, text.split(",")):
        name, _, port = item.partition("=")
        if name.strip() not in names or not port.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{item!r} is not NAME=PORT with NAME one of "
                                             + ", ".join(sorted(names)))
        changes[name.strip()] = int(port)
    return dataclasses.replace(PORTS, **changes)


def cmd_up(args: argparse.Namespace) -> int:
    problem = hostname_problem(args.me) if args.me is not None else None
    if problem:
        print(f"mailyard: --me: {problem}", file=sys.stderr)
        return 2
    platform = Platform(args.data, ports=args.ports, replicas=args.remote_replicas,
                        sync_always=args.nats_sync_always,
                        ingress_replicas=args.ingress_replicas, me=args.me)
    try:
        mail_user = MailUser.named(args.mail_user) if args.mail_user else MailUser.default()
    except ValueError as exc:
        print(f"mailyard: --mail-user: {exc}", file=sys.stderr)
        return 2
    platform = Platform(args.data, ports=args.ports, replicas=args.remote_replicas,
                        sync_always=args.nats_sync_always,
                        ingress_replicas=args.ingress_replicas, mail_user=mail_user,
                        dovecot=not args.no_dovecot)
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print("mailyard: starting ...", flush=True)
    try:
        platform.start()
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        print(f"mailyard: {exc}", file=sys.stderr)
        return 1
    print(platform.table(), flush=True)
    print("mailyard: up. Ctrl-C stops everything.", flush=True)
    try:
        while not stopping:
            for event in platform.supervise_once():
                print(f"mailyard: {event}", flush=True)
            time.sleep(0.5)
    finally:
        print("mailyard: stopping ...", flush=True)
        platform.stop()
    print("mailyard: stopped.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    services = {
        "smtp-ingress": PORTS.ingress_http, "queue": PORTS.queue_http,
        "remote-delivery": PORTS.remote_http, "local-delivery": PORTS.local_http,
        "relay-auth": PORTS.relayauth_http, "directory": PORTS.directory_http,
    }
    if dovecot_conf.dovecot_binary():  # `up` starts the bridge only beside Dovecot
        services["mail-access"] = PORTS.mailaccess_http
    worst = 0
    for name, port in services.items():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                state = "ready" if r.status == 200 else f"HTTP {r.status}"
        except urllib.error.HTTPError as exc:
            state, worst = f"not ready (HTTP {exc.code})", 1
        except OSError:
            state, worst = "down", 1
        print(f"{name:<16} {state:<22} http://127.0.0.1:{port}/metrics")
    return worst
