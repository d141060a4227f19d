"""`mailyard import qmail`: a qmail + vpopmail server's domains, users, passwords, aliases,
forwards, catch-alls, lists, quotas, control files, relay rules, leases and Maildirs.

    mailyard import qmail --dry-run                      # what would come over, what not
    mailyard import qmail --mail-dir /srv/mail           # do it
    mailyard import qmail --qmail-dir /mnt/old/var/qmail --vpopmail-dir /mnt/old/home/vpopmail \\
        --tcp-smtp /mnt/old/etc/tcp.smtp --open-smtp /mnt/old/etc/vpopmail/open-smtp

Reads only; nothing on the old host is written (--move takes the message files away from
it, on request). Exit status: 0 when everything came over; 1 when any line could not be
imported (the dry run lists them all, file:line: kind: reason, and so does a real run) or
the platform refused a write; 2 for bad arguments. A real run with malformed lines
("error") writes nothing unless --skip-bad; lines Mailyard has no equivalent for
("unsupported": programs, =host rules, ...) are reported and do not stop it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.cli.mailuser import MailUser
from mailyard.cli.qmail_import import maildirs
from mailyard.cli.qmail_import.plan import ListPlan, Plan, Sources, build
from mailyard.cli.qmail_import.problems import Problems


def _owner(name: str | None) -> tuple[int, int] | None:
    """Who the copied mail belongs to: the mail user local-delivery writes as and Dovecot
    serves as. --mail-user names it; else local-delivery's own MAIL_UID/MAIL_GID
    (MAILYARD_LOCAL_*, as set in a deployment); else `mailyard up`'s rule (root: the system
    user "mail", anyone else: themselves). None when the files are ours already."""
    if name:
        user = MailUser.named(name)
    else:
        uid, gid = (os.environ.get(f"MAILYARD_LOCAL_MAIL_{k}") for k in ("UID", "GID"))
        if uid and gid:
            if not (uid.isdigit() and gid.isdigit()):
                raise ValueError("MAILYARD_LOCAL_MAIL_UID/GID must be numbers")
            user = MailUser("", int(uid), int(gid))
        else:
            user = MailUser.default()
    if (os.geteuid(), os.getegid()) == (user.uid, user.gid):
        return None
    return user.uid, user.gid


def _count(maildir: Path) -> tuple[int, int]:
    """(messages, folders) of an old Maildir, for the dry run."""
    if not maildir.is_dir() or maildir.is_symlink():   # as maildirs.import_maildir
        return 0, 0
    found = maildirs.folders(maildir)
    total = 0
    for folder in found:
        for sub in maildirs.SUBS:
            path = maildir / folder / sub if folder else maildir / sub
            try:
                total += sum(1 for e in os.scandir(path) if not e.name.startswith("."))
            except OSError:
                pass
    return total, len(found)


_POSTING = {pb.POSTING_POLICY_MEMBERS: "members", pb.POSTING_POLICY_ANNOUNCE: "announce"}


def _posting(ml: ListPlan) -> str:
    """Who may post, as `mailyard list list` shows it: nothing for an open list."""
    if ml.posting not in _POSTING:
        return ""
    posters = f"\tposters={','.join(ml.posters)}" if ml.posters else ""
    return f"\tposting={_POSTING[ml.posting]}{posters}"


def describe(plan: Plan, out: Any = sys.stdout) -> None:
    """The dry run: one line per thing that would be created or updated."""
    for d in plan.domains:
        catch = d.catch_all_target if d.catch_all == "deliver" else d.catch_all
        print(f"domain {d.name}\tcatchall={catch}\t({d.source})", file=out)
    for ad in plan.alias_domains:
        print(f"domain {ad.name}\talias_of={ad.real}\t({ad.source})", file=out)
    if plan.recipient_delimiter is not None:
        delimiter, source = plan.recipient_delimiter
        print(f"recipient delimiter {delimiter}\t({source})", file=out)
    for m in plan.mailboxes:
        u = m.user
        messages, folders = _count(m.maildir)
        quota = f"{u.quota_bytes}S,{u.quota_messages}C" if u.quota_messages else (
            f"{u.quota_bytes}S" if u.quota_bytes else "none")
        password = "locked" if m.locked else u.hash_kind
        fields = [f"mailbox {m.address}", f"password={password}", f"quota={quota}",
                  f"messages={messages}", f"folders={folders}"]
        if u.gecos:
            fields.append(f"gecos={u.gecos}")
        if m.forward_to:
            fields.append(f"forward={','.join(m.forward_to)}")
            fields.append(f"keep_copy={'yes' if m.keep_copy else 'no'}")
        if m.autoresponse.body:
            fields.append(f"vacation=on subject={m.autoresponse.subject or '(Re: original)'}")
        print("\t".join(fields) + f"\t({m.source})", file=out)
    for a in plan.aliases:
        print(f"alias {a.address}\t-> {','.join(a.targets)}\t({a.source})", file=out)
    for ml in plan.lists:
        by_mail = ("\tsubscription=confirm"
                   if ml.subscription == pb.SUBSCRIPTION_POLICY_CONFIRM else "")
        print(f"list {ml.address}\towner={ml.owner}{_posting(ml)}{by_mail}"
              f"\tmembers={','.join(ml.members)}\t({ml.source})", file=out)
    c = plan.control
    if c.me:
        print(f"control me\t{c.me}", file=out)
    if c.rcpthosts:
        print(f"control rcpthosts\t+ {' '.join(c.rcpthosts)}", file=out)
    if c.badmailfrom:
        print(f"control badmailfrom\t+ {len(c.badmailfrom)} line(s)", file=out)
    for name, value in c.integers.items():
        print(f"control {name}\t{value}", file=out)
    if c.default_domain:
        print(f"control defaultdomain\t{c.default_domain}", file=out)
    for name, (lines, source) in c.quotawarn.items():
        print(f"control {name}\t{len(lines)} line(s)\t({source})", file=out)
    for route in c.routes:
        print(f"route {route}", file=out)
    if plan.rules_text is not None:
        print(f"tcp.smtp\t{plan.rules_count} rule(s)", file=out)
    for ip, seconds, source in plan.leases:
        print(f"lease {ip}\t{int(seconds)}s left\t({source})", file=out)
    if plan.expired_leases:
        print(f"open-smtp\t{plan.expired_leases} expired line(s) left out", file=out)


def report(problems: Problems, out: Any = sys.stderr) -> None:
    for problem in problems.sorted():
        print(problem, file=out)
    errors = len(problems.errors)
    unsupported = len(problems.items) - errors
    if problems.items:
        print(f"# {errors} malformed line(s), {unsupported} line(s) with no equivalent: "
              "not imported", file=out)


def _run(args: argparse.Namespace) -> int:
    try:
        owner = _owner(args.mail_user)
    except ValueError as exc:
        print(f"mailyard: {exc}", file=sys.stderr)
        return 2
    sources = Sources(qmail_dir=args.qmail_dir, vpopmail_dir=args.vpopmail_dir,
                      old_vpopmail_dir=args.old_vpopmail_dir,
                      tcp_smtp=None if args.tcp_smtp == "" else Path(args.tcp_smtp),
                      open_smtp=args.open_smtp, clear_minutes=args.clear_minutes)
    started = time.monotonic()
    plan = build(sources)
    if args.dry_run:
        describe(plan)
        report(plan.problems)
        return 1 if plan.problems.items else 0
    if plan.problems.errors and not args.skip_bad:
        report(plan.problems)
        print("mailyard: nothing imported: fix the lines above or pass --skip-bad to leave "
              "them behind", file=sys.stderr)
        return 1
    from mailyard.cli.qmail_import.apply import Applier, Conflicts, Options
    from mailyard.core.password_hashes import verify

    args.mail_dir.mkdir(parents=True, exist_ok=True)
    applier = Applier(plan, Options(args.mail_dir, owner, args.move, args.cram_md5_from_clear),
                      verify_clear=verify)
    try:
        applier.run()
    except Conflicts as exc:
        report(exc.problems)
        print(f"mailyard: nothing imported: {exc}", file=sys.stderr)
        return 1
    report(plan.problems)
    print(f"# imported in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 1 if plan.problems.items else 0


def register(sub: Any) -> None:
    parser = sub.add_parser("import", help="bring over another mail server's setup")
    kinds = parser.add_subparsers(dest="import_command", required=True, metavar="KIND")
    q = kinds.add_parser("qmail", help="a qmail + vpopmail server (its files, read only)",
                         description=__doc__.split("\n\n")[0],
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--qmail-dir", type=Path, default=Path("/var/qmail"),
                   help="qmail's home: control/ and users/assign (default /var/qmail)")
    q.add_argument("--vpopmail-dir", type=Path, default=Path("/home/vpopmail"),
                   help="vpopmail's home as it is here (default /home/vpopmail)")
    q.add_argument("--old-vpopmail-dir", default="/home/vpopmail",
                   help="vpopmail's home as the files name it (default /home/vpopmail)")
    q.add_argument("--tcp-smtp", default="/etc/tcp.smtp",
                   help="tcprules source file (default /etc/tcp.smtp; '' to leave the "
                        "platform's rules alone)")
    q.add_argument("--open-smtp", type=Path, default=None,
                   help="POP-before-SMTP file (default VPOPMAIL_DIR/etc/open-smtp)")
    q.add_argument("--clear-minutes", type=int, default=180,
                   help="clearopensmtp's age limit, vpopmail's --enable-clear-minutes "
                        "(default 180)")
    q.add_argument("--mail-dir", type=Path,
                   default=Path(os.environ.get("MAILYARD_LOCAL_MAIL_DIR", "var/mail")),
                   help="the platform's mail tree (local-delivery's MAIL_DIR; default "
                        "$MAILYARD_LOCAL_MAIL_DIR or var/mail)")
    q.add_argument("--mail-user", default=None, metavar="USER",
                   help="owner of the copied mail (default: local-delivery's MAIL_UID/"
                        "MAIL_GID, else as `mailyard up`: root gives it to 'mail')")
    q.add_argument("--move", action="store_true",
                   help="move the message files instead of copying them")
    q.add_argument("--cram-md5-from-clear", action="store_true",
                   help="enable CRAM-MD5 for users whose vpasswd holds a clear password "
                        "that matches their hash (stores a plaintext-equivalent secret)")
    q.add_argument("--skip-bad", action="store_true",
                   help="import the rest when some lines are malformed")
    q.add_argument("--dry-run", action="store_true",
                   help="print what would be created and what cannot be; write nothing")
    q.set_defaults(func=_run)
