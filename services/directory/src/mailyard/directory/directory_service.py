"""gRPC mailyard.directory.v1.Directory: vadddomain, vadduser, valias, vmoduser and friends.

The directory is the one writer of the KV bucket "directory". Every write is a CAS on the
record's revision (store.KVStore), so two replicas never lose an update; reads for listings
and Resolve come from the service's own live DirectoryView, after waiting for the view to
catch up with our last write (read-your-writes for the CLI).

The API never hands out secrets: password_hash and cram_md5_secret come back as "*" when set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.directory.v1 import directory_pb2_grpc as pb_grpc
from mailyard.core import extensions, listcookie
from mailyard.core.addresses import split
from mailyard.core.directory import (
    SETTINGS_KEY,
    DirectoryView,
    canonical,
    domain_key,
    record_key,
    record_prefix,
)
from mailyard.core.srs_keys import SrsSecrets
from mailyard.directory import passwords, validate
from mailyard.directory.errors import (
    Refused,
    denied,
    exists,
    invalid,
    not_found,
    precondition,
    rpc,
)
from mailyard.directory.listing import Listings
from mailyard.directory.metrics import changed
from mailyard.directory.store import Conflict, KVStore, ViewSync

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)
Ctx = grpc.aio.ServicerContext

KINDS = ("mailbox", "alias", "list")
_KIND_NAMES = {"mailbox": "a mailbox", "alias": "an alias", "list": "a mailing list"}




def redacted(mailbox: pb.Mailbox) -> pb.Mailbox:
    out = pb.Mailbox()
    out.CopyFrom(mailbox)
    out.password_hash = "*" if mailbox.password_hash else ""
    out.cram_md5_secret = "*" if mailbox.cram_md5_secret else ""
    return out


class DirectoryService(pb_grpc.DirectoryServicer):
    def __init__(self, store: KVStore, view: DirectoryView, *, min_password_length: int = 8,
                 cookie_secrets: SrsSecrets | None = None) -> None:
        self.store = store
        # the list cookies' secrets (ConfirmListMember); None: no confirmation is valid
        self.cookie_secrets = cookie_secrets
        self.view = view
        self.sync = ViewSync(view)
        self.listings = Listings(view)
        self.min_password_length = min_password_length
        self._sweeps: set[asyncio.Task[None]] = set()  # DeleteDomain's, kept to their end

    # -- helpers -------------------------------------------------------------------------

    async def _committed(self, kind: str, revision: int) -> None:
        if revision:
            changed(kind)
            await self.sync.wait(revision)

    async def _require_domain(self, name: str) -> pb.Domain:
        """A real domain, the only kind records live in."""
        current = await self.store.get(domain_key(name))
        if current.value is None:
            raise precondition(f"domain {name} does not exist (mailyard domain add {name})")
        domain = pb.Domain.FromString(current.value)
        if domain.alias_of:
            # its addresses are the real domain's: a record here could never be reached
            raise precondition(f"{name} is an alias domain of {domain.alias_of}: add the "
                               f"address in {domain.alias_of} instead")
        return domain

    def _fits(self, request: Message) -> None:
        """A request larger than any record can be (its targets or members are all in the
        record) is refused before its addresses are checked: checking 300,000 of them holds
        the event loop for seconds, and every other call's KV read waits behind it."""
        size = request.ByteSize()
        if size > self.store.max_payload:
            raise invalid(f"the request is {size} bytes; one record holds at most "
                          f"{self.store.max_payload} (nats-server max_payload)")

    async def _create(self, kind: str, address: str, record: Message, metric: str) -> None:
        """Create a mailbox, alias or list whose name is free in all three kinds."""
        await self._require_domain(split(address)[1])
        expect = 0
        for other in KINDS:
            current = await self.store.get(record_key(other, address))
            if current.value is not None:
                raise exists(f"{address} already exists as {_KIND_NAMES[other]}")
            if other == kind:
                expect = current.revision
        try:
            revision = await self.store.put(record_key(kind, address),
                                            record.SerializeToString(), expect=expect)
        except Conflict:
            raise exists(f"{address} was created at the same time by another request"
                         ) from None
        await self._committed(metric, revision)

    async def _modify(self, kind: str, cls: type[M], address: str,
                      edit: Callable[[M], None], metric: str) -> M:
        """CAS-edit one existing record; `edit` may run more than once (lost races)."""
        return await self._modify_key(record_key(kind, address), cls,
                                      self._record_name(kind, address), edit, metric)

    async def _modify_key(self, key: str, cls: type[M], what: str,
                          edit: Callable[[M], None], metric: str) -> M:
        result: list[M] = []

        def mutate(raw: bytes | None) -> bytes:
            if raw is None:
                raise not_found(f"no {what}")
            record = cls.FromString(raw)
            edit(record)
            result[:] = [record]
            return record.SerializeToString()

        _, revision = await self.store.change(key, mutate)
        await self._committed(metric, revision)
        return result[0]

    async def _delete(self, key: str, what: str, metric: str) -> pb.DeleteResponse:
        def mutate(raw: bytes | None) -> None:
            if raw is None:
                raise not_found(f"no {what}")

        _, revision = await self.store.change(key, mutate)
        await self._committed(metric, revision)
        return pb.DeleteResponse(deleted=True)

    def _catch_alls_to(self, picked: Callable[[str], bool]) -> list[str]:
        """The domains whose catch-all delivers to a mailbox `picked` names. Such a
        catch-all without its mailbox accepts every address at RCPT and bounces it at
        delivery (backscatter), so that mailbox stays while it is one. Read from the view,
        caught up with our own writes; a catch-all set on another replica in the same
        moment is the known limit of checks across keys."""
        return [d.name for d in self.view.domains()
                if d.catch_all == pb.CATCH_ALL_ACTION_DELIVER and picked(d.catch_all_target)]

    def _record_name(self, kind: str, address: str) -> str:
        """How a NOT_FOUND names a record: one asked for in an alias domain is said to be
        its real domain's (vpopmail's tools took joe@alias for joe@real; here the records
        have one name, and the answer says which)."""
        real = self.view.real_address(address)
        if real == address:
            return f"{kind} {address}"
        return (f"{kind} {address} ({split(address)[1]} is an alias domain: the record is "
                f"{real}'s)")

    def _names(self, address: str, targets: list[str]) -> bool:
        """Does one of the targets (local part as given) name this canonical address? Local
        parts are matched lower-cased, so "Info@" is info@ itself: a loop on every message;
        so is info@ of one of its domain's alias domains (from the view, caught up with our
        own writes)."""
        address = self.view.real_address(address)
        return any(self.view.real_address(canonical(target)) == address for target in targets)


    def _listed_domain(self, name: str) -> str:
        if not name:
            return ""
        domain = validate.domain(name)
        if not self.view.is_local_domain(domain):
            raise not_found(f"no domain {domain}")
        return domain

    # -- domains -------------------------------------------------------------------------

    @rpc
    async def AddDomain(self, request: pb.AddDomainRequest, context: Ctx) -> pb.Domain:
        name = validate.domain(request.name)
        key = domain_key(name)
        current = await self.store.get(key)
        if current.value is not None:
            raise exists(f"domain {name} already exists")
        domain = pb.Domain(name=name)
        if request.alias_of:
            domain.alias_of = await self._real_domain_for_alias(name, request.alias_of)
        try:
            revision = await self.store.put(key, domain.SerializeToString(),
                                            expect=current.revision)
        except Conflict:
            raise exists(f"domain {name} already exists") from None
        await self._committed("domain", revision)
        log.info("domain added", extra={"domain": name, "alias_of": domain.alias_of})
        return domain

    async def _real_domain_for_alias(self, name: str, alias_of: str) -> str:
        real = validate.domain(alias_of)
        if real == name:
            raise invalid(f"{name} cannot be an alias domain of itself")
        current = await self.store.get(domain_key(real))
        if current.value is None:
            raise precondition(f"domain {real} does not exist (mailyard domain add {real})")
        # One level only, as vpopmail: an alias of an alias would make every lookup a chain
        # to follow, and deleting the middle one would orphan the first silently.
        if (real_of := pb.Domain.FromString(current.value).alias_of):
            raise precondition(f"{real} is itself an alias domain of {real_of}: name "
                               f"{real_of} instead")
        return real

    @rpc
    async def DeleteDomain(self, request: pb.DeleteDomainRequest, context: Ctx
                           ) -> pb.DeleteResponse:
        name = validate.domain(request.name)
        aliases = self.view.alias_domains(name)
        if aliases and not request.with_aliases:
            raise precondition(f"{name} has alias domains: {', '.join(aliases)} (delete them "
                               f"first, or delete them with it: mailyard domain del {name} "
                               f"--with-aliases)")
        others = [d for d in self._catch_alls_to(lambda target: split(target)[1] == name)
                  if d != name]
        if others:
            raise precondition(f"a mailbox of {name} is the catch-all of {', '.join(others)}"
                               f" (change it first: mailyard catchall set {others[0]} ...)")
        # The domain record goes first: from then on AddMailbox & co refuse the domain, so
        # the sweep below cannot race with new records appearing in it.
        response = await self._delete(domain_key(name), f"domain {name}", "domain")
        # The sweep runs to its end even when the call is cancelled (Ctrl-C, a deadline):
        # cut short, it left records that a later `domain add` brought back.
        sweep = asyncio.create_task(self._sweep(name))
        self._sweeps.add(sweep)
        sweep.add_done_callback(self._sweeps.discard)
        await asyncio.shield(sweep)
        return response

    async def _sweep(self, name: str) -> None:
        # Its alias domains go too: those asked for, and one added in the same moment by
        # another request (an alias of nothing answers for nothing).
        for alias in self.view.alias_domains(name):
            _, revision = await self.store.change(domain_key(alias), lambda _raw: None)
            await self._committed("domain", revision)
        for kind in KINDS:
            prefix = record_prefix(kind, name)
            for key in [k for k in list(self.view.data) if k.startswith(prefix)]:
                _, revision = await self.store.change(key, lambda _raw: None)
                await self._committed(kind, revision)
        log.info("domain deleted", extra={"domain": name})

    @rpc
    async def ListDomains(self, request: pb.ListDomainsRequest, context: Ctx
                          ) -> pb.ListDomainsResponse:
        domains, token = self.listings.domains(request.page_size, request.page_token)
        return pb.ListDomainsResponse(domains=domains, next_page_token=token)

    @rpc
    async def SetCatchAll(self, request: pb.SetCatchAllRequest, context: Ctx) -> pb.Domain:
        name = validate.domain(request.domain)
        action = request.action
        if action not in pb.CatchAllAction.values():
            raise invalid(f"unknown catch-all action {action}")
        target = ""
        if action == pb.CATCH_ALL_ACTION_DELIVER:
            if not request.target:
                raise invalid("catch-all delivery needs a target mailbox")
            # joe@alias.test is joe@real.test's mailbox: stored so, DeleteMailbox sees it
            target = self.view.real_address(validate.address(request.target))
            # Resolution hands the target to local delivery as a mailbox: it must be one.
            if (await self.store.get(record_key("mailbox", target))).value is None:
                raise precondition(f"catch-all target {target} is not a mailbox")

        def edit(domain: pb.Domain) -> None:
            if domain.alias_of:
                raise precondition(f"{name} is an alias domain of {domain.alias_of}: its "
                                   f"catch-all is {domain.alias_of}'s")
            domain.catch_all = action
            domain.catch_all_target = target

        return await self._modify_key(domain_key(name), pb.Domain, f"domain {name}", edit,
                                      "catchall")

    # -- mailboxes -----------------------------------------------------------------------

    @rpc
    async def AddMailbox(self, request: pb.AddMailboxRequest, context: Ctx) -> pb.Mailbox:
        address = validate.address(request.address)
        gecos = validate.gecos(request.gecos)
        phc = await passwords.requested_hash(request.password, request.password_hash,
                                             request.enable_cram_md5,
                                             self.min_password_length)
        local, domain = split(address)
        mailbox = pb.Mailbox(
            address=address, password_hash=phc,
            cram_md5_secret=(passwords.cram_md5_secret(request.password)
                             if request.enable_cram_md5 else ""),
            quota_bytes=request.quota_bytes, quota_messages=request.quota_messages,
            maildir=f"{domain}/{local}/Maildir", gecos=gecos)
        await self._create("mailbox", address, mailbox, "mailbox")
        log.info("mailbox added", extra={"address": address})
        return redacted(mailbox)

    @rpc
    async def DeleteMailbox(self, request: pb.AddressRequest, context: Ctx
                            ) -> pb.DeleteResponse:
        address = validate.address(request.address)
        if domains := self._catch_alls_to(lambda target: target == address):
            raise precondition(f"{address} is the catch-all of {', '.join(domains)}"
                               f" (change it first: mailyard catchall set {domains[0]} ...)")
        return await self._delete(record_key("mailbox", address),
                                  self._record_name("mailbox", address), "mailbox")

    @rpc
    async def SetPassword(self, request: pb.SetPasswordRequest, context: Ctx) -> pb.Mailbox:
        address = validate.address(request.address)
        if not request.password_hash:
            passwords.check(request.password, self.min_password_length)
        if (await self.store.get(record_key("mailbox", address))).value is None:
            # before paying for the hash
            raise not_found(f"no {self._record_name('mailbox', address)}")
        phc = await passwords.requested_hash(request.password, request.password_hash,
                                             request.enable_cram_md5,
                                             self.min_password_length)
        secret = (passwords.cram_md5_secret(request.password) if request.enable_cram_md5
                  else "")

        def edit(mailbox: pb.Mailbox) -> None:
            mailbox.password_hash = phc
            mailbox.cram_md5_secret = secret

        return redacted(await self._modify("mailbox", pb.Mailbox, address, edit, "mailbox"))

    @rpc
    async def UpgradePasswordHash(self, request: pb.UpgradePasswordHashRequest, context: Ctx
                                  ) -> pb.Mailbox:
        address = validate.address(request.address)
        new = passwords.upgrade_hash(request.new_hash)
        if not request.current_hash:
            raise invalid("current_hash is required (the hash the login matched)")

        def edit(mailbox: pb.Mailbox) -> None:
            # Runs on a fresh read at every CAS attempt: a password set since the login was
            # checked is what stays.
            if mailbox.password_hash != request.current_hash:
                raise precondition(f"the password of {address} changed since the login")
            mailbox.password_hash = new

        mailbox = await self._modify("mailbox", pb.Mailbox, address, edit, "mailbox")
        log.info("password hash upgraded", extra={"address": address})
        return redacted(mailbox)

    @rpc
    async def SetQuota(self, request: pb.SetQuotaRequest, context: Ctx) -> pb.Mailbox:
        address = validate.address(request.address)

        def edit(mailbox: pb.Mailbox) -> None:
            mailbox.quota_bytes = request.quota_bytes
            mailbox.quota_messages = request.quota_messages

        return redacted(await self._modify("mailbox", pb.Mailbox, address, edit, "mailbox"))

    @rpc
    async def SetGecos(self, request: pb.SetGecosRequest, context: Ctx) -> pb.Mailbox:
        address = validate.address(request.address)
        gecos = validate.gecos(request.gecos)

        def edit(mailbox: pb.Mailbox) -> None:
            mailbox.gecos = gecos

        return redacted(await self._modify("mailbox", pb.Mailbox, address, edit, "mailbox"))

    @rpc
    async def SetAutoresponse(self, request: pb.SetAutoresponseRequest, context: Ctx
                              ) -> pb.Mailbox:
        address = validate.address(request.address)
        auto = validate.autoresponse(request.autoresponse)

        def edit(mailbox: pb.Mailbox) -> None:
            mailbox.autoresponse.CopyFrom(auto)

        return redacted(await self._modify("mailbox", pb.Mailbox, address, edit, "mailbox"))

    @rpc
    async def ClearAutoresponse(self, request: pb.AddressRequest, context: Ctx) -> pb.Mailbox:
        address = validate.address(request.address)

        def edit(mailbox: pb.Mailbox) -> None:
            mailbox.ClearField("autoresponse")

        return redacted(await self._modify("mailbox", pb.Mailbox, address, edit, "mailbox"))

    @rpc
    async def GetAutoresponse(self, request: pb.AddressRequest, context: Ctx
                              ) -> pb.Autoresponse:
        address = validate.address(request.address)
        current = await self.store.get(record_key("mailbox", address))
        if current.value is None:
            raise not_found(f"no mailbox {address}")
        return pb.Mailbox.FromString(current.value).autoresponse

    @rpc
    async def ListMailboxes(self, request: pb.ListMailboxesRequest, context: Ctx
                            ) -> pb.ListMailboxesResponse:
        mailboxes, token = self.listings.records(
            "mailbox", pb.Mailbox, self._listed_domain(request.domain), request.page_size,
            request.page_token, redacted)
        return pb.ListMailboxesResponse(mailboxes=mailboxes, next_page_token=token)

    @rpc
    async def SetForward(self, request: pb.SetForwardRequest, context: Ctx) -> pb.Mailbox:
        self._fits(request)
        address = validate.address(request.address)
        targets = validate.targets(list(request.targets))
        if self._names(address, targets):
            raise invalid(f"{address} cannot forward to itself (use --keep-copy)")

        def edit(mailbox: pb.Mailbox) -> None:
            del mailbox.forward_to[:]
            mailbox.forward_to.extend(targets)
            mailbox.keep_copy = request.keep_copy

        return redacted(await self._modify("mailbox", pb.Mailbox, address, edit, "forward"))

    @rpc
    async def ClearForward(self, request: pb.AddressRequest, context: Ctx) -> pb.Mailbox:
        address = validate.address(request.address)

        def edit(mailbox: pb.Mailbox) -> None:
            del mailbox.forward_to[:]
            mailbox.keep_copy = False

        return redacted(await self._modify("mailbox", pb.Mailbox, address, edit, "forward"))

    # -- aliases -------------------------------------------------------------------------

    @rpc
    async def AddAlias(self, request: pb.AddAliasRequest, context: Ctx) -> pb.Alias:
        self._fits(request)
        address = validate.address(request.address)
        targets = validate.targets(list(request.targets))
        if self._names(address, targets):
            raise invalid(f"alias {address} cannot point to itself")
        alias = pb.Alias(address=address, targets=targets)
        await self._create("alias", address, alias, "alias")
        return alias

    @rpc
    async def DeleteAlias(self, request: pb.AddressRequest, context: Ctx) -> pb.DeleteResponse:
        address = validate.address(request.address)
        return await self._delete(record_key("alias", address),
                                  self._record_name("alias", address), "alias")

    @rpc
    async def ListAliases(self, request: pb.ListAliasesRequest, context: Ctx
                          ) -> pb.ListAliasesResponse:
        aliases, token = self.listings.records(
            "alias", pb.Alias, self._listed_domain(request.domain), request.page_size,
            request.page_token)
        return pb.ListAliasesResponse(aliases=aliases, next_page_token=token)

    # -- mailing lists -------------------------------------------------------------------

    @rpc
    async def AddList(self, request: pb.AddListRequest, context: Ctx) -> pb.MailingList:
        self._fits(request)
        address = validate.address(request.address)
        if not request.owner:
            raise invalid("a mailing list needs an owner (bounces go there)")
        owner = validate.target(request.owner)
        if self._names(address, [owner]):
            # list mail goes out from the owner: every auto-reply and every member's
            # bounce would go to all members again
            raise invalid(f"list {address} cannot be its own owner")
        members = validate.targets(list(request.members), "member") if request.members else []
        if self._names(address, members):
            raise invalid(f"list {address} cannot be its own member")
        posters = validate.targets(list(request.posters), "poster") if request.posters else []
        mlist = pb.MailingList(address=address, owner=owner, members=members,
                               posting=validate.posting(request.posting),
                               posters=posters,
                               subscription=validate.subscription(request.subscription))
        await self._create("list", address, mlist, "list")
        return mlist

    @rpc
    async def SetListPosting(self, request: pb.SetListPostingRequest, context: Ctx
                             ) -> pb.MailingList:
        address = validate.address(request.address)
        posting = validate.posting(request.posting)
        posters = validate.targets(list(request.posters), "poster") if request.posters else []

        def edit(mlist: pb.MailingList) -> None:
            mlist.posting = posting
            mlist.posters[:] = posters

        return await self._modify("list", pb.MailingList, address, edit, "list")

    @rpc
    async def SetListSubscription(self, request: pb.SetListSubscriptionRequest, context: Ctx
                                  ) -> pb.MailingList:
        address = validate.address(request.address)
        subscription = validate.subscription(request.subscription)

        def edit(mlist: pb.MailingList) -> None:
            mlist.subscription = subscription

        return await self._modify("list", pb.MailingList, address, edit, "list")

    @rpc
    async def ConfirmListMember(self, request: pb.ConfirmListMemberRequest, context: Ctx
                                ) -> pb.ConfirmListMemberResponse:
        """The one membership write local-delivery may make: checked here against the
        cookie, so its token alone adds or removes nobody."""
        address = validate.address(request.list)
        member = validate.target(request.member)
        action = listcookie.SUBSCRIBE if request.subscribe else listcookie.UNSUBSCRIBE
        secrets = await self.cookie_secrets.get() if self.cookie_secrets else []
        # the cookie names the member as local-delivery read it from the confirmation
        # address (a UTF-8 domain as written), not in the stored A-label form
        if not listcookie.valid(secrets, address, action, request.member.strip(),
                                request.cookie, time.time()):
            raise denied(f"the confirmation for {member} is invalid or expired")
        if request.subscribe and self._names(address, [member]):
            raise invalid(f"list {address} cannot be its own member")
        changed: list[bool] = []

        def edit(mlist: pb.MailingList) -> None:
            if mlist.subscription != pb.SUBSCRIPTION_POLICY_CONFIRM:
                raise precondition(f"{address} takes no subscriptions by mail")
            # the member as it was added (Joe@ by the owner) is the one confirmed (joe@);
            # changed[:]: edit runs again when another write came first
            present = [m for m in mlist.members if m.lower() == member.lower()]
            if request.subscribe:
                changed[:] = [not present]
                if not present:
                    mlist.members.append(member)
            else:
                changed[:] = [bool(present)]
                for old in present:
                    mlist.members.remove(old)

        await self._modify("list", pb.MailingList, address, edit, "list")
        log.info("list member %s by mail", "added" if request.subscribe else "removed",
                 extra={"list": address, "changed": changed[0]})
        return pb.ConfirmListMemberResponse(changed=changed[0])

    @rpc
    async def DeleteList(self, request: pb.AddressRequest, context: Ctx) -> pb.DeleteResponse:
        address = validate.address(request.address)
        return await self._delete(record_key("list", address),
                                  self._record_name("list", address), "list")

    @rpc
    async def AddListMember(self, request: pb.ListMemberRequest, context: Ctx
                            ) -> pb.MailingList:
        address = validate.address(request.list)
        member = validate.target(request.member)
        if self._names(address, [member]):
            raise invalid(f"list {address} cannot be its own member")

        def edit(mlist: pb.MailingList) -> None:
            if member not in mlist.members:  # adding twice is a no-op, as with ezmlm
                mlist.members.append(member)

        return await self._modify("list", pb.MailingList, address, edit, "list")

    @rpc
    async def DeleteListMember(self, request: pb.ListMemberRequest, context: Ctx
                               ) -> pb.MailingList:
        address = validate.address(request.list)
        member = validate.target(request.member)

        def edit(mlist: pb.MailingList) -> None:
            if member not in mlist.members:
                raise not_found(f"{member} is not a member of {address}")
            mlist.members.remove(member)

        return await self._modify("list", pb.MailingList, address, edit, "list")

    @rpc
    async def ListLists(self, request: pb.ListListsRequest, context: Ctx
                        ) -> pb.ListListsResponse:
        lists, token = self.listings.records(
            "list", pb.MailingList, self._listed_domain(request.domain), request.page_size,
            request.page_token)
        return pb.ListListsResponse(lists=lists, next_page_token=token)

    @rpc
    async def GetList(self, request: pb.AddressRequest, context: Ctx) -> pb.MailingList:
        address = validate.address(request.address)
        mlist = self.view.mailing_list(address)
        if mlist is None:
            raise not_found(f"no {self._record_name('list', address)}")
        return mlist

    # -- resolution ----------------------------------------------------------------------

    @rpc
    async def Resolve(self, request: pb.AddressRequest, context: Ctx) -> pb.Resolution:
        try:
            address = validate.address(request.address)
        except Refused:
            raise invalid(f"not an address: {request.address!r}") from None
        return self.view.resolve(address)

    # -- directory-wide settings ---------------------------------------------------------

    def _settings(self) -> pb.Settings:
        raw = self.view.data.get(SETTINGS_KEY)
        if raw is None:
            return pb.Settings(recipient_delimiter=extensions.DEFAULT)
        return pb.Settings.FromString(raw)

    @rpc
    async def GetSettings(self, request: pb.GetSettingsRequest, context: Ctx) -> pb.Settings:
        return self._settings()

    @rpc
    async def SetRecipientDelimiter(self, request: pb.SetRecipientDelimiterRequest,
                                    context: Ctx) -> pb.Settings:
        delimiters = request.recipient_delimiter
        if (why := extensions.problem(delimiters)) is not None:
            raise invalid(f"recipient delimiter {delimiters!r}: {why}")

        def mutate(raw: bytes | None) -> bytes:
            settings = pb.Settings.FromString(raw) if raw is not None else pb.Settings()
            settings.recipient_delimiter = delimiters
            return settings.SerializeToString()

        # stored even when it is the default: "" (off) and "+" are both a choice made
        _, revision = await self.store.change(SETTINGS_KEY, mutate)
        await self._committed("settings", revision)
        log.info("recipient delimiter set", extra={"recipient_delimiter": delimiters})
        return self._settings()
