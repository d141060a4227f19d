"""Carrying out a Plan on a running platform through the directory, control and relay-auth
gRPC APIs: the same calls `mailyard domain add`, `user add --password-hash`, `alias add`,
`control set`, `rules import` and `lease grant` make.

Every step compares with what the platform already has, so a second run updates instead of
duplicating: an existing domain is kept, an existing mailbox gets the old host's password
hash, quota and forwards again, an alias whose targets changed is replaced, list members
are added and removed to match, rcpthosts and badmailfrom are merged, smtproutes lines are
replaced by domain. Before the first write the platform's records are read and every
address the import would take is checked against them (a mailbox on the old host that is
an alias here is reported, not half-imported).

Order: domains, then each mailbox's Maildir (in place before the mailbox exists, so no
delivery can race the copy), then the mailbox, then aliases, lists, forwards and catch-alls
(their targets exist by then), control files, relay rules, leases.
"""

from __future__ import annotations

import math
import secrets
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc
from google.protobuf.duration_pb2 import Duration

from mailyard.api.control.v1 import control_pb2, control_pb2_grpc
from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.directory.v1 import directory_pb2_grpc as pb_grpc
from mailyard.api.relayauth.v1 import relayauth_pb2, relayauth_pb2_grpc
from mailyard.cli import pages
from mailyard.cli.endpoints import channel
from mailyard.cli.qmail_import import maildirs
from mailyard.cli.qmail_import.plan import MailboxPlan, Plan
from mailyard.cli.qmail_import.problems import Problems
from mailyard.local_delivery.quota import Quota

LEASE_USER = "open-smtp"          # open-smtp does not record who logged in
_ACTIONS = {"none": pb.CATCH_ALL_ACTION_UNSPECIFIED, "delete": pb.CATCH_ALL_ACTION_DELETE,
            "deliver": pb.CATCH_ALL_ACTION_DELIVER}


@dataclass(frozen=True)
class Options:
    mail_dir: Path
    owner: tuple[int, int] | None = None
    move: bool = False
    cram_md5_from_clear: bool = False


class Conflicts(Exception):
    """The platform already holds records the import would have to overwrite."""

    def __init__(self, problems: Problems) -> None:
        super().__init__(f"{len(problems.items)} conflict(s) with the platform's records")
        self.problems = problems


def merged(current: str, new: list[str], key: Callable[[str], str] = str) -> list[str]:
    """The lines of a control file's text with `new` replacing lines of the same key, the
    rest appended."""
    replace = {key(line): line for line in new}
    out: dict[str, None] = {}       # ordered and deduplicated without a quadratic lookup
    for raw in current.splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and key(line) in replace:
            line = replace.pop(key(line))
        out[line] = None
    left = set(replace.values())
    return [*out, *(line for line in new if line in left)]


def _where(source: str) -> tuple[str, int]:
    """A plan's "file:line" as Problems takes it."""
    path, _, line = source.rpartition(":")
    return (path, int(line)) if line.isdigit() else (source, 0)


class Applier:
    def __init__(self, plan: Plan, options: Options, out: TextIO = sys.stdout,
                 verify_clear: Callable[[str, str], bool] | None = None) -> None:
        self.plan = plan
        self.options = options
        self.out = out
        self.verify_clear = verify_clear
        self.directory = pb_grpc.DirectoryStub(channel("DIRECTORY"))
        self.control = control_pb2_grpc.ControlStub(channel("DIRECTORY"))
        self.relay = relayauth_pb2_grpc.RelayAuthStub(channel("RELAYAUTH"))
        self.mailboxes: dict[str, pb.Mailbox] = {}
        self.aliases: dict[str, pb.Alias] = {}
        self.lists: dict[str, pb.MailingList] = {}
        self.totals = maildirs.Copied()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- reading what is there -----------------------------------------------------------

    def read_platform(self) -> None:
        """Everything the import touches, read once; raises Conflicts before any write."""
        d = self.directory
        on_platform = {x.name: x for x in pages.records(d.ListDomains,
                                                        pb.ListDomainsRequest(), "domains")}
        domains = set(on_platform)
        for domain in self.plan.domains:
            if domain.name not in domains:
                continue
            for m in pages.records(d.ListMailboxes,
                                   pb.ListMailboxesRequest(domain=domain.name), "mailboxes"):
                self.mailboxes[m.address] = m
            for a in pages.records(d.ListAliases, pb.ListAliasesRequest(domain=domain.name),
                                   "aliases"):
                self.aliases[a.address] = a
            for ml in pages.records(d.ListLists, pb.ListListsRequest(domain=domain.name),
                                    "lists"):
                self.lists[ml.address] = ml
        conflicts = Problems()
        for wanted_alias in self.plan.alias_domains:
            there = on_platform.get(wanted_alias.name)
            if there is not None and there.alias_of != wanted_alias.real:
                what = (f"an alias domain of {there.alias_of}" if there.alias_of
                        else "a real domain")
                conflicts.error(*_where(wanted_alias.source), f"{wanted_alias.name} is "
                                f"{what} on the platform, the old host has it as an alias "
                                f"domain of {wanted_alias.real}: delete it first")
        for wanted_domain in self.plan.domains:
            there = on_platform.get(wanted_domain.name)
            if there is not None and there.alias_of:
                conflicts.error(*_where(wanted_domain.source), f"{wanted_domain.name} is "
                                f"an alias domain of {there.alias_of} on the platform, the "
                                "old host has it as a real domain: delete it first")
        kinds: dict[str, Mapping[str, object]] = {
            "mailbox": self.mailboxes, "alias": self.aliases, "list": self.lists}
        wanted = ([("mailbox", m.address, m.source) for m in self.plan.mailboxes]
                  + [("alias", a.address, a.source) for a in self.plan.aliases]
                  + [("list", ml.address, ml.source) for ml in self.plan.lists])
        for kind, address, source in wanted:
            for other, records in kinds.items():
                if other != kind and address in records and not (
                        kind == "list" and other == "alias"):
                    path, _, line = source.rpartition(":")
                    where = (path, int(line)) if line.isdigit() else (source, 0)
                    conflicts.error(*where, f"{address} is {other} on the platform, the old "
                                    f"host has it as {kind}: delete one of them first")
        if conflicts.items:
            raise Conflicts(conflicts)
        self.domains = domains

    # -- writing -------------------------------------------------------------------------

    def run(self) -> None:
        self.read_platform()
        for domain in self.plan.domains:
            if domain.name not in self.domains:
                self.directory.AddDomain(pb.AddDomainRequest(name=domain.name))
                self.say(f"domain {domain.name}: created")
            else:
                self.say(f"domain {domain.name}: exists")
        for alias_domain in self.plan.alias_domains:
            name, real = alias_domain.name, alias_domain.real
            if name not in self.domains:
                self.directory.AddDomain(pb.AddDomainRequest(name=name, alias_of=real))
                self.say(f"domain {name}: created, an alias domain of {real}")
            else:
                self.say(f"domain {name}: exists, an alias domain of {real}")
        self._recipient_delimiter()
        for mailbox in self.plan.mailboxes:
            self._mailbox(mailbox)
        for alias in self.plan.aliases:
            self._alias(alias.address, alias.targets)
        for mlist in self.plan.lists:
            self._list(mlist.address, mlist.owner, mlist.members)
            if mlist.posting:  # ezmlm's: set on a rerun too
                self.directory.SetListPosting(pb.SetListPostingRequest(
                    address=mlist.address, posting=mlist.posting, posters=mlist.posters))
            if mlist.subscription:  # ezmlm-manage's lists: set on a rerun too
                self.directory.SetListSubscription(pb.SetListSubscriptionRequest(
                    address=mlist.address, subscription=mlist.subscription))
        for mailbox in self.plan.mailboxes:
            self._forward(mailbox)
        for domain in self.plan.domains:
            self.directory.SetCatchAll(pb.SetCatchAllRequest(
                domain=domain.name, action=_ACTIONS[domain.catch_all],
                target=domain.catch_all_target))
        self._control()
        self._rules_and_leases()
        t = self.totals
        self.say(f"mail: {t.messages} message(s) copied ({t.bytes} bytes), {t.present} "
                 f"already there, {len(self.plan.mailboxes)} mailbox(es)")

    def _recipient_delimiter(self) -> None:
        if self.plan.recipient_delimiter is None:
            return
        value = self.plan.recipient_delimiter[0]
        current = self.directory.GetSettings(pb.GetSettingsRequest()).recipient_delimiter
        if value in current:  # already (perhaps beside "+"): the postmaster's choice stays
            self.say(f"recipient delimiter: {current} (takes {value} already)")
            return
        self.directory.SetRecipientDelimiter(pb.SetRecipientDelimiterRequest(
            recipient_delimiter=value))
        self.say(f"recipient delimiter: {value} (was {current or 'off'}), as the old "
                 "host's qmail-ext")

    def _mailbox(self, plan: MailboxPlan) -> None:
        local, _, domain = plan.address.rpartition("@")
        user = plan.user
        target = maildirs.Target(self.options.mail_dir / domain / local / "Maildir",
                                 Quota(user.quota_bytes, user.quota_messages),
                                 self.options.owner)
        copied = maildirs.import_maildir(plan.maildir, target, move=self.options.move)
        for field in ("messages", "present", "bytes", "folders"):
            setattr(self.totals, field, getattr(self.totals, field) + getattr(copied, field))
        existing = self.mailboxes.get(plan.address)
        # a locked account gets a password nobody knows (the directory hashes it): the
        # platform has no mailbox without one, and the old one opened it everywhere
        secret = secrets.token_urlsafe(32) if plan.locked else ""
        password_hash = "" if plan.locked else user.crypted
        if existing is None:
            self.directory.AddMailbox(pb.AddMailboxRequest(
                address=plan.address, password=secret, password_hash=password_hash,
                gecos=user.gecos, quota_bytes=user.quota_bytes,
                quota_messages=user.quota_messages))
            state = "created"
        else:
            self.directory.SetPassword(pb.SetPasswordRequest(
                address=plan.address, password=secret, password_hash=password_hash))
            self.directory.SetQuota(pb.SetQuotaRequest(
                address=plan.address, quota_bytes=user.quota_bytes,
                quota_messages=user.quota_messages))
            if existing.gecos != user.gecos:
                self.directory.SetGecos(pb.SetGecosRequest(address=plan.address,
                                                           gecos=user.gecos))
            state = "updated"
        cram = ""
        if self.options.cram_md5_from_clear and user.clear and not plan.locked:
            cram = self._cram(plan)
        kind = "locked" if plan.locked else user.hash_kind
        self.say(f"mailbox {plan.address}: {state} ({kind}), {copied.messages} "
                 f"message(s) copied, {copied.present} already there, {copied.folders} "
                 f"folder(s){cram}")

    def _cram(self, plan: MailboxPlan) -> str:
        """CRAM-MD5 needs the password itself: only a clear field that matches the hash."""
        clear = plan.user.clear or ""
        if self.verify_clear is None or not self.verify_clear(plan.user.crypted, clear):
            return ", CRAM-MD5 not enabled (the clear password does not match the hash)"
        try:
            self.directory.SetPassword(pb.SetPasswordRequest(
                address=plan.address, password=clear, enable_cram_md5=True))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            return f", CRAM-MD5 not enabled ({exc.details()})"
        return ", CRAM-MD5 enabled from the clear password"

    def _forward(self, plan: MailboxPlan) -> None:
        existing = self.mailboxes.get(plan.address)
        if plan.forward_to:
            self.directory.SetForward(pb.SetForwardRequest(
                address=plan.address, targets=plan.forward_to, keep_copy=plan.keep_copy))
            copy = " (and kept)" if plan.keep_copy else ""
            self.say(f"forward {plan.address} -> {','.join(plan.forward_to)}{copy}")
        elif existing is not None and existing.forward_to:
            self.directory.ClearForward(pb.AddressRequest(address=plan.address))
            self.say(f"forward {plan.address}: cleared")
        # the vacation message follows the old host's .qmail like the forward does
        if plan.autoresponse.body:
            self.directory.SetAutoresponse(pb.SetAutoresponseRequest(
                address=plan.address, autoresponse=plan.autoresponse))
            self.say(f"vacation {plan.address}: set")
        elif existing is not None and existing.HasField("autoresponse"):
            self.directory.ClearAutoresponse(pb.AddressRequest(address=plan.address))
            self.say(f"vacation {plan.address}: cleared")

    def _alias(self, address: str, targets: list[str]) -> None:
        existing = self.aliases.get(address)
        if existing is not None and list(existing.targets) == targets:
            self.say(f"alias {address}: unchanged")
            return
        if existing is not None:
            self.directory.DeleteAlias(pb.AddressRequest(address=address))
        self.directory.AddAlias(pb.AddAliasRequest(address=address, targets=targets))
        self.say(f"alias {address} -> {','.join(targets)}: "
                 f"{'replaced' if existing is not None else 'created'}")

    def _list(self, address: str, owner: str, members: list[str]) -> None:
        existing = self.lists.get(address)
        if address in self.aliases:   # an alias before: the old host has an -owner now
            self.directory.DeleteAlias(pb.AddressRequest(address=address))
        if existing is None:
            self.directory.AddList(pb.AddListRequest(address=address, owner=owner,
                                                     members=members))
            self.say(f"list {address}: created, {len(members)} member(s)")
            return
        for member in members:
            if member not in existing.members:
                self.directory.AddListMember(pb.ListMemberRequest(list=address, member=member))
        for member in existing.members:
            if member not in members:
                self.directory.DeleteListMember(pb.ListMemberRequest(list=address,
                                                                     member=member))
        self.say(f"list {address}: updated, {len(members)} member(s)")

    # -- control files, rules, leases ----------------------------------------------------

    def _get_control(self, name: str) -> str:
        try:
            return self.control.Get(control_pb2.GetRequest(name=name)).text
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return ""

    def _set_control(self, name: str, lines: list[str]) -> None:
        text = "".join(f"{line}\n" for line in lines)
        if self._get_control(name) == text:
            self.say(f"control {name}: unchanged")
            return
        self.control.Set(control_pb2.SetRequest(name=name, text=text))
        self.say(f"control {name}: set ({len(lines)} line(s))")

    def _merged(self, name: str, new: list[str], key: Callable[[str], str] = str) -> list[str]:
        return merged(self._get_control(name), new, key)

    def _control(self) -> None:
        control = self.plan.control
        if control.me:
            self._set_control("me", [control.me])
        if control.rcpthosts:
            self._set_control("rcpthosts", self._merged("rcpthosts", control.rcpthosts,
                                                         str.lower))
        if control.badmailfrom:
            self._set_control("badmailfrom", self._merged("badmailfrom", control.badmailfrom))
        for name, value in control.integers.items():
            self._set_control(name, [str(value)])
        if control.default_domain:
            self._set_control("defaultdomain", [control.default_domain])
        for name, (lines, _) in control.quotawarn.items():
            self._set_control(name, lines)
        if control.routes:
            self._set_control("smtproutes", self._merged(
                "smtproutes", control.routes, lambda line: line.split()[0].partition(":")[0]
                .lower().rstrip(".")))

    def _rules_and_leases(self) -> None:
        if self.plan.rules_text is not None and self.plan.rules_count:
            rules = self.relay.ImportRules(relayauth_pb2.ImportRulesRequest(
                text=self.plan.rules_text))
            self.say(f"tcp.smtp: {len(rules.rules)} rule(s) active, version {rules.version}")
        for ip, seconds, _source in self.plan.leases:
            request = relayauth_pb2.GrantLeaseRequest(ip=ip, user=LEASE_USER, imported=True)
            request.ttl.CopyFrom(Duration(seconds=max(1, math.ceil(seconds))))
            self.relay.GrantLease(request)
        if self.plan.leases or self.plan.expired_leases:
            self.say(f"open-smtp: {len(self.plan.leases)} lease(s) granted for their "
                     f"remaining time, {self.plan.expired_leases} expired")
