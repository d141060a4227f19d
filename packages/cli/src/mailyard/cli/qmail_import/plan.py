"""Everything the import will create, worked out from the old host's files and checked in
full before anything is written.

Paths inside the files (users/assign, vpasswd, .qmail) are the old host's, e.g.
/home/vpopmail/domains/example.com/joe. The copy being imported may sit elsewhere
(--vpopmail-dir); such a path is read under the copy by swapping the old vpopmail home
(--old-vpopmail-dir, /home/vpopmail) for it. Comparisons ("is this Maildir joe's?") use the
old host's paths, as written.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from google.protobuf.message import Message

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.cli.qmail_import import (
    assign,
    assigncdb,
    autoresponders,
    backends,
    commentsonly,
    controlfiles,
    dotqmail,
    ezmlm,
    names,
    qmailext,
    selfforward,
    tcprules,
    userflags,
    virtualdomains,
    vlimits,
    vpasswd,
    vpasswdcdb,
)
from mailyard.cli.qmail_import.problems import Problems
from mailyard.cli.qmail_import.sourcefile import Unreadable, read_bytes, read_lines

# A directory record is one NATS message: nats-server's max_payload (1 MiB unless set
# otherwise) holds the record and the headers the directory writes it with. An alias, list
# or forward past it fails at its write, after what came before it was written.
RECORD_BYTES = 1_048_576 - 128


@dataclass(frozen=True)
class Sources:
    qmail_dir: Path = Path("/var/qmail")
    vpopmail_dir: Path = Path("/home/vpopmail")
    old_vpopmail_dir: str = "/home/vpopmail"
    tcp_smtp: Path | None = Path("/etc/tcp.smtp")
    open_smtp: Path | None = None          # default: <vpopmail-dir>/etc/open-smtp
    clear_minutes: int = tcprules.CLEAR_MINUTES

    def local(self, old_path: str) -> Path:
        """Where an old-host path is in the copy being imported."""
        old = self.old_vpopmail_dir.rstrip("/")
        if old_path == old or old_path.startswith(old + "/"):
            return self.vpopmail_dir / old_path[len(old):].lstrip("/")
        return Path(old_path)


@dataclass
class MailboxPlan:
    address: str
    user: vpasswd.VUser
    maildir: Path                          # the old Maildir, in the copy
    source: str                            # vpasswd file:line
    forward_to: list[str] = field(default_factory=list)
    keep_copy: bool = False
    # the vacation message of an autoresponder line in its .qmail; empty: none
    autoresponse: pb.Autoresponse = field(default_factory=pb.Autoresponse)
    locked: bool = False                   # refused every login there: no password here


@dataclass
class AliasPlan:
    address: str
    targets: list[str]
    source: str


@dataclass
class ListPlan:
    address: str
    owner: str
    members: list[str]
    source: str
    posting: pb.PostingPolicy.ValueType = pb.POSTING_POLICY_UNSPECIFIED
    posters: list[str] = field(default_factory=list)
    subscription: pb.SubscriptionPolicy.ValueType = pb.SUBSCRIPTION_POLICY_UNSPECIFIED


@dataclass
class DomainPlan:
    name: str
    catch_all: str = "none"                # none, delete or deliver
    catch_all_target: str = ""
    source: str = ""


@dataclass
class AliasDomainPlan:
    name: str
    real: str                              # a domain of plan.domains
    source: str


@dataclass
class Plan:
    domains: list[DomainPlan] = field(default_factory=list)
    alias_domains: list[AliasDomainPlan] = field(default_factory=list)
    mailboxes: list[MailboxPlan] = field(default_factory=list)
    aliases: list[AliasPlan] = field(default_factory=list)
    lists: list[ListPlan] = field(default_factory=list)
    control: controlfiles.ControlImport = field(default_factory=controlfiles.ControlImport)
    # ("-", its source) when the old vpopmail had qmail-ext; None: the platform's stays
    recipient_delimiter: tuple[str, str] | None = None
    rules_text: str | None = None          # None: no tcp.smtp to import
    rules_count: int = 0
    leases: list[tuple[str, float, str]] = field(default_factory=list)  # ip, seconds, source
    expired_leases: int = 0
    problems: Problems = field(default_factory=Problems)


def _read(path: Path, problems: Problems) -> list[str] | None:
    try:
        return read_lines(path)
    except Unreadable as exc:
        problems.error(path, 0, str(exc))
        return None


def build(src: Sources, now: float | None = None) -> Plan:
    plan = Plan()
    problems = plan.problems
    control_dir = src.qmail_dir / "control"
    files = {}
    for name in controlfiles.READ:
        lines = _read(control_dir / name, problems)
        if lines is not None:
            files[name] = lines
    plan.control = controlfiles.parse(files, control_dir, problems)

    # before the domains: a user's extension catch-all is checked against it
    plan.recipient_delimiter = qmailext.delimiter(src.vpopmail_dir, problems)
    backends.report(src.vpopmail_dir, problems)
    assign_path = src.qmail_dir / "users" / "assign"
    assign_lines = _read(assign_path, problems)
    if assign_lines is None:
        problems.error(assign_path, 0, "not found: no vpopmail domains to import")
        assign_lines = []
    assigned = assign.parse(assign_lines, assign_path, problems)
    users_cdb = src.qmail_dir / "users" / "cdb"
    try:
        raw = read_bytes(users_cdb)
    except Unreadable as exc:
        problems.error(users_cdb, 0, str(exc))
        raw = None
    if raw is not None and assign_lines:
        assigncdb.compare(assigned, raw, assign_path, users_cdb, problems)
    virtual_path = control_dir / "virtualdomains"
    virtual = _read(virtual_path, problems)
    if virtual is not None:
        virtualdomains.check(virtual, virtual_path, assigned, assign_path, problems)
    real = {d.name for d in assigned if d.name == d.real}
    # catch-alls to no mailbox of their own domain, resolved once every mailbox is planned
    elsewhere: list[tuple[DomainPlan, dotqmail.CatchAll, str]] = []
    for d in assigned:
        if any(p.name == d.name for p in plan.domains) or any(
                a.name == d.name for a in plan.alias_domains):
            problems.error(assign_path, d.line, f"{d.name} is assigned twice")
        elif d.name != d.real:
            # vaddaliasdomain's line: the real domain's name and directory, another prefix
            if d.real not in real:
                problems.error(assign_path, d.line, f"{d.name} is an alias domain of "
                               f"{d.real}, which users/assign has no line of its own for")
            else:
                plan.alias_domains.append(
                    AliasDomainPlan(d.name, d.real, f"{assign_path}:{d.line}"))
        else:
            _domain(src, d, plan, elsewhere)
    _catch_alls_elsewhere(elsewhere, plan)
    skipped = {d.name for d in assigned} - real
    locals_ = {line.strip().lower() for line in files.get("locals", [])}
    plan.control.rcpthosts = [h for h in plan.control.rcpthosts
                              if h not in real and h not in skipped and h not in locals_]

    if src.tcp_smtp is not None:
        lines = _read(src.tcp_smtp, problems)
        if lines is not None:
            plan.rules_text, plan.rules_count = tcprules.rules_text(lines, src.tcp_smtp,
                                                                    problems)
    default_domain = src.vpopmail_dir / "etc" / "defaultdomain"
    plan.control.default_domain = controlfiles.default_domain(
        _read(default_domain, problems) or [], default_domain, problems)
    global_warning = src.vpopmail_dir / "domains" / controlfiles.QUOTAWARN_FILE
    controlfiles.quotawarn(_read(global_warning, problems), global_warning, None,
                           plan.control, problems)
    open_smtp = src.open_smtp or src.vpopmail_dir / "etc" / "open-smtp"
    lines = _read(open_smtp, problems)
    now = time.time() if now is None else now
    for entry in tcprules.open_smtp(lines or [], open_smtp, problems):
        seconds = tcprules.remaining(entry, now, src.clear_minutes)
        if seconds > 0:
            plan.leases.append((entry.ip, seconds, f"{open_smtp}:{entry.line}"))
        else:
            plan.expired_leases += 1
    return plan


def _domain(src: Sources, assigned: assign.AssignedDomain, plan: Plan,
            elsewhere: list[tuple[DomainPlan, dotqmail.CatchAll, str]]) -> None:
    problems = plan.problems
    name, home = assigned.name, assigned.home.rstrip("/")
    local_home = src.local(home)
    vpasswd_path = local_home / "vpasswd"
    lines = _read(vpasswd_path, problems)
    if lines is None:
        problems.error(vpasswd_path, 0, f"not found: {name}'s users cannot be imported")
        return
    domain = DomainPlan(name, source=f"{src.qmail_dir / 'users' / 'assign'}:{assigned.line}")
    cdb_path = local_home / "vpasswd.cdb"
    try:
        cdb = read_bytes(cdb_path)
    except Unreadable as exc:
        problems.error(cdb_path, 0, str(exc))
        cdb = None
    if cdb is not None:
        vpasswdcdb.compare(lines, cdb, vpasswd_path, cdb_path, problems)
    plan.domains.append(domain)
    mailboxes: dict[str, MailboxPlan] = {}
    by_maildir: dict[str, str] = {}       # old Maildir path -> address
    by_home: dict[str, str] = {}
    limits_path, limits = _limits(src, local_home, problems)
    # an empty directory: vchkpw or vdelivermail would have made it at the first use
    users = [u if u.home else replace(u, home=posixpath.join(home, u.local))
             for u in vpasswd.parse(lines, name, vpasswd_path, problems)]
    for user in users:
        address = f"{user.local}@{name}"
        old_maildir = posixpath.normpath(user.home + "/Maildir")
        flags = userflags.effective(user.flags, limits.flags)
        mailbox = MailboxPlan(address, user, src.local(old_maildir),
                              f"{vpasswd_path}:{user.line}",
                              locked=userflags.locked(flags) or not user.crypted)
        if not user.crypted:
            problems.unsupported(vpasswd_path, user.line, f"{user.local}: no password "
                                 "(vadduser -n): vchkpw refused its logins, or took the first "
                                 "password given with --enable-learn-passwords; imported "
                                 "locked, with its mail and a password nobody knows (mailyard "
                                 "user passwd opens it)")
        userflags.report(user.flags, limits.flags, user.local, vpasswd_path, user.line,
                         problems)
        if mailbox.maildir.is_symlink():    # maildirs never follows one: said here, not lost
            problems.error(mailbox.maildir, 0, f"{address}'s Maildir is a symbolic link: "
                           "its mail would stay behind (put the Maildir itself there)")
        mailboxes[user.local] = mailbox
        by_maildir[old_maildir] = address
        by_home[posixpath.normpath(user.home)] = address
    plan.mailboxes.extend(mailboxes.values())
    if limits.lines:
        subject = sum(1 for u in users if not u.flags & userflags.V_OVERRIDE)
        userflags.domain_report(limits.flags, name, subject, limits_path, limits.lines[0],
                                problems)
    warning = local_home / controlfiles.QUOTAWARN_FILE
    controlfiles.quotawarn(_read(warning, problems), warning, name, plan.control, problems)
    vlimits.report_quotas(limits, name, limits_path, problems)

    dots = _dot_files(local_home, problems)
    texts = {local: _read(path, problems) or [] for local, path in sorted(dots.items())}
    parsed = {local: dotqmail.parse(texts[local], dots[local], home, problems)
              for local in texts}
    lists = {local: where for local, dot in parsed.items()
             if local != "default" and not local.endswith("-default")
             and (where := ezmlm.list_dir(dot, home)) is not None}
    extensions: list[tuple[MailboxPlan, dotqmail.DotQmail]] = []    # .qmail-USER-default
    for local, path in sorted(dots.items()):
        dot = parsed[local]
        dropped = commentsonly.first_comment(texts[local])
        if local == "default" and dropped:
            domain.catch_all, domain.source = "delete", f"{path}:{dropped}"
            problems.unsupported(path, dropped, "comments only: qmail-local delivered every "
                                 f"address of {name} without a .qmail of its own nowhere, its "
                                 "mailboxes' too (vdelivermail never ran); here unknown users' "
                                 "mail is dropped (the catch-all delete) and the mailboxes "
                                 "receive theirs")
            continue
        if local == "default":
            _catch_all(dot, home, domain, mailboxes, by_home, problems, elsewhere)
            continue
        if local in lists:
            _ezmlm_list(src, local, lists[local], dot, domain.name, dots, parsed, plan)
            continue
        if any(local.startswith(f"{base}-") for base in lists):
            # the list's own ezmlm programs (ezmlm-manage, -return, -warn): its command
            # addresses stand for them
            dot.programs = [p for p in dot.programs if not ezmlm.is_ezmlm(p)]
            if not (dot.programs or dot.forwards or dot.maildirs or dot.mboxes):
                continue
        if local.endswith("-default") and local[:-8] in mailboxes:
            extensions.append((mailboxes[local[:-8]], dot))
            continue
        if local.endswith("-default"):
            problems.unsupported(path, 0, f"{local}@{name} (every address starting with "
                                 f"{local[:-8]}-): Mailyard has no extension addresses")
            continue
        if local in mailboxes and dropped:
            problems.unsupported(path, dropped, "comments only: qmail-local delivered "
                                 f"{mailboxes[local].address}'s mail nowhere (only an empty "
                                 ".qmail means the default delivery); Mailyard has no mailbox "
                                 "that drops its mail: here it reaches the Maildir")
            continue
        if local in mailboxes:
            _forward(dot, mailboxes[local], by_maildir, problems, home, src.local)
            continue
        if dropped:
            problems.unsupported(path, dropped, f"comments only: qmail-local accepted "
                                 f"{local}@{name}'s mail and delivered it nowhere; Mailyard "
                                 "keeps no address that drops mail: not imported (refused at "
                                 "RCPT, or the domain's catch-all takes it)")
            continue
        targets, _ = _targets(dot, None, by_maildir, problems)
        if not targets:
            continue
        try:
            address = names.address(local, name)
        except ValueError as exc:
            problems.error(path, 0, str(exc))
            continue
        if address in targets:
            problems.error(path, 0, f"{address} forwards to itself")
            continue
        owner = f"{local}-owner@{name}"
        is_list = f"{local}-owner" in dots
        record = (pb.MailingList(address=address, owner=owner, members=targets) if is_list
                  else pb.Alias(address=address, targets=targets))
        if _too_large(record, address, len(targets), path, problems):
            continue
        if is_list:
            plan.lists.append(ListPlan(address, owner, targets, str(path)))
        else:
            plan.aliases.append(AliasPlan(address, targets, str(path)))
    for local, mailbox in mailboxes.items():
        user_dot = src.local(mailbox.user.home) / ".qmail"
        lines = _read(user_dot, problems)
        if lines is not None and local in dots:
            # qmail-local delivers by .qmail-USER and never runs vdelivermail, which alone
            # reads the user's own .qmail: it had no effect on the old host
            problems.unsupported(user_dot, 0, f"{dots[local].name} delivers "
                                 f"{mailbox.address} on the old host, so this file was "
                                 "never read: not imported")
        elif lines is not None and (dropped := commentsonly.first_comment(lines)):
            problems.unsupported(user_dot, dropped, "comments only: vdelivermail 5.4 took "
                                 f"that as delivered and dropped {mailbox.address}'s mail "
                                 "(before 5.4 it went to the Maildir); Mailyard has no mailbox "
                                 "that drops its mail: here it reaches the Maildir")
        elif lines is not None:
            dot = dotqmail.parse(lines, user_dot, mailbox.user.home, problems)
            _forward(dot, mailbox, by_maildir, problems, mailbox.user.home, src.local)
    for mailbox, dot in extensions:     # after every forward: compared with the user's own
        _extension_catch_all(dot, mailbox, by_maildir, plan)
    for mailbox in mailboxes.values():
        _own_extension_files(src.local(mailbox.user.home), mailbox.address, plan)


def _ezmlm_list(src: Sources, local: str, old_dir: str, dot: dotqmail.DotQmail, name: str,
                dots: dict[str, Path], parsed: dict[str, dotqmail.DotQmail],
                plan: Plan) -> None:
    """`.qmail-<local>` runs ezmlm-send on `old_dir`: the list, from its directory."""
    problems = plan.problems
    path = dots[local]
    found = ezmlm.read(src.local(old_dir), dot, old_dir, problems)
    manage_dot = parsed.get(f"{local}-default")
    ezmlm.subscription(src.local(old_dir), manage_dot is not None and any(
        p.name == "ezmlm-manage" for p in manage_dot.programs), found)
    for program in dot.programs:
        if program.name in ("ezmlm-send", "ezmlm-issubn"):
            continue
        if program.name == "ezmlm-reject":
            problems.unsupported(path, program.line, "ezmlm-reject's checks (empty subject, "
                                 "MIME types, size) are not carried over; the list is")
        elif not ezmlm.is_ezmlm(program):
            problems.unsupported(path, program.line, f"{program.describe()}: programs are "
                                 "not run by Mailyard; not imported")
    if found.moderated:
        problems.unsupported(path, 0, f"{local}@{name}: moderation is not supported; the "
                             "list is imported as announce-only with its moderators as "
                             "posters (mailyard list set --posting)")
    if found.moderated_subscription:
        problems.unsupported(path, 0, f"{local}@{name}: subscription moderation (DIR/modsub) "
                             "is not supported; the list is imported closed to subscription "
                             "by mail (mailyard list subscription)")
    members = list(dict.fromkeys([*found.members, *(a for a, _ in dot.forwards)]))
    owner_dot = parsed.get(f"{local}-owner")
    owners = found.owners or ([a for a, _ in owner_dot.forwards] if owner_dot else [])
    try:
        address = names.address(local, name)
        owner = names.target(owners[0]) if owners else ""
    except ValueError as exc:
        problems.error(path, 0, str(exc))
        return
    if not owner:
        problems.error(src.local(old_dir), 0, f"{address}: no owner (no address in "
                       f"{old_dir}/owner nor in .qmail-{local}-owner); a list needs one for "
                       "its bounces: write one there")
        return
    record = pb.MailingList(address=address, owner=owner, members=members,
                            posting=found.posting, posters=found.posters)
    if _too_large(record, address, len(members), path, problems):
        return
    plan.lists.append(ListPlan(address, owner, members, str(path), found.posting,
                               found.posters, found.subscription))


def _limits(src: Sources, local_home: Path, problems: Problems
            ) -> tuple[Path, vlimits.Limits]:
    """The domain's limits file, else vpopmail's default one (vget_limits' order)."""
    for path in (local_home / ".qmailadmin-limits", src.vpopmail_dir / "etc" / "vlimits.default"):
        lines = _read(path, problems)
        if lines is not None:
            return path, vlimits.parse(lines)
    return path, vlimits.Limits()


def _dot_files(local_home: Path, problems: Problems) -> dict[str, Path]:
    out: dict[str, Path] = {}
    try:
        entries = sorted(local_home.iterdir())
    except OSError as exc:
        problems.error(local_home, 0, f"cannot list the domain directory: {exc.strerror}")
        return out
    for path in entries:
        local = dotqmail.local_of(path.name)
        if local is None or not path.is_file():
            continue
        if any("A" <= c <= "Z" for c in path.name):
            problems.unsupported(path, 0, "qmail-local never read it (it looks for the "
                                 "address in lower case): not imported")
            continue
        out[local] = path
    return out


def _targets(dot: dotqmail.DotQmail, own_maildir: str | None, by_maildir: dict[str, str],
             problems: Problems) -> tuple[list[str], bool]:
    targets: dict[str, None] = {}     # ordered, and no lookup in a list per line
    keep_copy = False
    for address, number in dot.forwards:
        try:
            targets[names.target(address)] = None
        except ValueError as exc:
            problems.error(dot.path, number, str(exc))
    for path, number in dot.maildirs:
        clean = posixpath.normpath(path)
        if clean == own_maildir:
            keep_copy = True
        elif clean in by_maildir:
            targets[by_maildir[clean]] = None
        else:
            problems.unsupported(dot.path, number, f"Maildir {path} belongs to no imported "
                                 "mailbox: not imported")
    for path, number in dot.mboxes:
        problems.unsupported(dot.path, number, f"mbox file {path}: Mailyard delivers to "
                             "Maildirs only; not imported")
    for program in dot.programs:
        problems.unsupported(dot.path, program.line, f"{program.describe()}: programs are not "
                             "run by Mailyard; not imported")
    return list(targets), keep_copy


def _forward(dot: dotqmail.DotQmail, mailbox: MailboxPlan, by_maildir: dict[str, str],
             problems: Problems, home: str, local: Callable[[str], Path]) -> None:
    """`home`: where the .qmail's deliveries ran (its relative paths start there)."""
    for program in [p for p in dot.programs if autoresponders.is_autoresponder(p)]:
        dot.programs.remove(program)
        auto, why = autoresponders.autoresponse(program, home, local)
        if auto is None:
            problems.unsupported(dot.path, program.line, f"{program.describe()}: {why}; "
                                 "not imported")
        else:
            mailbox.autoresponse = auto
    own = posixpath.normpath(mailbox.user.home + "/Maildir")
    targets, keep_copy = _targets(dot, own, by_maildir, problems)
    targets = selfforward.drop(dot, mailbox.address, targets, problems)
    forward_to = list(dict.fromkeys([*mailbox.forward_to, *targets]))
    user = mailbox.user
    record = pb.Mailbox(address=mailbox.address, password_hash=user.crypted, gecos=user.gecos,
                        forward_to=forward_to, maildir=f"{mailbox.address}/Maildir")
    if _too_large(record, f"{mailbox.address}'s forward", len(forward_to), dot.path,
                  problems):
        return                          # the mailbox itself comes over, without this forward
    mailbox.forward_to = forward_to
    mailbox.keep_copy = mailbox.keep_copy or keep_copy


def _extension_catch_all(dot: dotqmail.DotQmail, mailbox: MailboxPlan,
                         by_maildir: dict[str, str], plan: Plan) -> None:
    """.qmail-USER-default: where USER-anything@ went on the old host. Mailyard has one answer
    for such addresses, the recipient delimiter "-": they go where USER@ goes."""
    problems = plan.problems
    targets, keep = _targets(dot, posixpath.normpath(mailbox.user.home + "/Maildir"),
                             by_maildir, problems)
    if mailbox.address in targets:
        targets.remove(mailbox.address)
        keep = True
    local, _, domain = mailbox.address.partition("@")
    anything = f"{local}-ANYTHING@{domain}"
    if set(targets) != set(mailbox.forward_to) or keep != (
            mailbox.keep_copy or not mailbox.forward_to):
        went = [*(["its own Maildir"] if keep else []), *targets,
                *(["programs"] if dot.programs else []), *(["mbox files"] if dot.mboxes else [])]
        problems.unsupported(dot.path, 0, f"{anything} went to {', '.join(went) or 'nowhere'} "
                             f"there, not where {mailbox.address} goes: Mailyard holds no "
                             "record for such addresses (the recipient delimiter - takes them "
                             f"to {mailbox.address}); not imported")
    elif plan.recipient_delimiter is None:
        problems.unsupported(dot.path, 0, f"{anything} reached {mailbox.address} there: on "
                             "Mailyard that is the recipient delimiter - for every address "
                             "(mailyard delimiter set -), not set by the import since the old "
                             "vpopmail's QMAIL_EXT was not found")


def _own_extension_files(user_dir: Path, address: str, plan: Plan) -> None:
    """.qmail-EXT and .qmail-default in a user's own directory: vdelivermail built with
    QMAIL_EXT delivered USER-EXT@ by them before the user's .qmail. Here such an address
    reaches the user like the rest of its mail: each file is reported."""
    try:
        found = sorted(e.name for e in os.scandir(user_dir)
                        if e.name.startswith(dotqmail.PREFIX) and e.is_file())
    except OSError:
        return                          # no directory (no mail yet), or reported with it
    local, _, domain = address.partition("@")
    for name in found:
        ext = dotqmail.local_of(name) or ""
        if plan.recipient_delimiter is None:
            plan.problems.unsupported(user_dir / name, 0, "vdelivermail reads it only when "
                                      "built with --enable-qmail-ext, which the old one was "
                                      "not known to be: most likely never read there; not "
                                      "imported")
            continue
        target = (f"{local}-{ext[:-7]}ANYTHING@{domain}" if ext.endswith("default")
                  else f"{local}-{ext}@{domain}")
        plan.problems.unsupported(user_dir / name, 0, f"{target} was delivered by this file "
                                  "there (vpopmail's QMAIL_EXT); here it reaches "
                                  f"{address} like the rest of its mail: not imported (an "
                                  "alias of that address can take it: mailyard alias add)")


def _too_large(record: Message, what: str, count: int, path: Path | str, problems: Problems
               ) -> bool:
    size = record.ByteSize()
    if size <= RECORD_BYTES:
        return False
    problems.error(path, 0, f"{what} has {count} targets ({size} bytes): a directory record "
                   f"holds at most {RECORD_BYTES} (nats-server's max_payload, 1 MiB); not "
                   "imported")
    return True


def _catch_all(dot: dotqmail.DotQmail, home: str, domain: DomainPlan,
               mailboxes: dict[str, MailboxPlan], by_home: dict[str, str],
               problems: Problems,
               elsewhere: list[tuple[DomainPlan, dotqmail.CatchAll, str]]) -> None:
    found = dotqmail.catch_all(dot, home, problems)
    if found is None:
        return
    domain.source = f"{dot.path}:{found.line}"
    if found.action == "bounce":
        return   # refused at RCPT (550 5.1.1) instead of accepted and bounced
    if found.action == "delete":
        domain.catch_all = "delete"
        return
    address = ""
    if found.action == "address":
        local, _, dom = found.target.rpartition("@")
        if dom.lower() == domain.name and local.lower() in mailboxes:
            address = mailboxes[local.lower()].address
    else:
        path = found.target.removesuffix("/Maildir")
        address = by_home.get(path, "")
    if not address:
        elsewhere.append((domain, found, dot.path))   # another hosted domain's, perhaps
        return
    domain.catch_all = "deliver"
    domain.catch_all_target = address


def _catch_alls_elsewhere(elsewhere: list[tuple[DomainPlan, dotqmail.CatchAll, str]],
                          plan: Plan) -> None:
    """Catch-alls into a mailbox of another hosted domain (a customer's second domain sent
    its unknown users to the first one's): the platform's catch-all takes any mailbox."""
    if not elsewhere:
        return
    addresses = {m.address for m in plan.mailboxes}
    homes = {posixpath.normpath(m.user.home): m.address for m in plan.mailboxes}
    real = {a.name: a.real for a in plan.alias_domains}
    for domain, found, path in elsewhere:
        address = ""
        if found.action == "address":
            local, _, dom = found.target.rpartition("@")
            try:
                name = names.domain(dom)
                candidate = names.address(local, real.get(name, name))
            except ValueError:
                candidate = ""
            address = candidate if candidate in addresses else ""
        else:
            address = homes.get(found.target.removesuffix("/Maildir"), "")
        if not address:
            plan.problems.unsupported(path, found.line, f"catch-all to {found.target}: "
                                      "Mailyard delivers a catch-all to a mailbox here only; "
                                      "not imported (unknown users are refused)")
            continue
        domain.catch_all = "deliver"
        domain.catch_all_target = address
