"""Read side of the directory (vpopmail's users/assign and vpasswd) for every service.

The directory service owns writes; smtp-ingress (RCPT checks), relay-auth (passwords) and
local-delivery (resolution) keep a live copy through DirectoryView. Records are the
`mailyard.directory.v1` protobufs, stored under these keys in the KV bucket "directory":

    domain.<d>               Domain (an alias domain's names its real domain: alias_of)
    mailbox.<d>.<l>          Mailbox
    alias.<d>.<l>            Alias
    list.<d>.<l>             MailingList
    settings                 Settings (directory-wide; absent: the defaults)

where <d> and <l> are the lower-cased domain and local part in unpadded base64url (KV keys
allow only a small alphabet; local parts may hold almost anything).
"""

from __future__ import annotations

import base64

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core import bus, extensions, listaddresses, listcookie
from mailyard.core.addresses import normalise_local, split, to_ascii_domain
from mailyard.core.kvview import KVView


def _enc(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def canonical(address: str) -> str:
    """Directory form of an address: local part lower case and NFC (normalise_local),
    domain as A-label. Every write and lookup of the directory goes through it."""
    local, domain = split(address.strip())
    local = normalise_local(local)
    return f"{local}@{to_ascii_domain(domain)}" if domain else local


def domain_key(domain: str) -> str:
    return f"domain.{_enc(to_ascii_domain(domain))}"


SETTINGS_KEY = "settings"


def record_key(kind: str, address: str) -> str:
    """kind: mailbox, alias or list."""
    local, domain = split(canonical(address))
    return f"{kind}.{_enc(domain)}.{_enc(local)}"


def _keep(keys: set[str], key: str, held: bool) -> None:
    (keys.add if held else keys.discard)(key)


class DirectoryView(KVView):
    def __init__(self) -> None:
        super().__init__(bus.KV_DIRECTORY)
        # alias domain's key -> its real domain's key, kept as the records change, so that
        # is_local_domain (every RCPT, every queued message) stays one or two dict lookups
        self._alias_domains: dict[str, str] = {}
        self.delimiters = extensions.DEFAULT  # Settings.recipient_delimiter, as it is now
        # the keys of the lists that take subscriptions by mail, kept as the records change,
        # so accepts() answers their command addresses without parsing a list (0.5 ms for
        # 40,000 members, at every RCPT a client cares to send)
        self._by_mail: set[str] = set()
        # ... and those not open to every poster (members, announce): smtp-ingress asks at
        # the end of DATA (data_list_posting), and nothing at all while there are none
        self.guarded_lists: set[str] = set()
        self.on_change(self._track)

    def _track(self, key: str, value: bytes | None) -> None:
        """What the view derives from records, kept as they change: the lists taking
        subscriptions by mail and those guarding who posts, the delimiters, the alias
        domains."""
        if key.startswith("list."):
            mlist = pb.MailingList.FromString(value) if value is not None else pb.MailingList()
            _keep(self._by_mail, key, mlist.subscription == pb.SUBSCRIPTION_POLICY_CONFIRM)
            _keep(self.guarded_lists, key, mlist.posting in (pb.POSTING_POLICY_MEMBERS,
                                                             pb.POSTING_POLICY_ANNOUNCE))
            return
        if key == SETTINGS_KEY:
            self.delimiters = (pb.Settings.FromString(value).recipient_delimiter
                               if value is not None else extensions.DEFAULT)
            return
        if not key.startswith("domain."):
            return
        alias_of = pb.Domain.FromString(value).alias_of if value is not None else ""
        if alias_of:
            self._alias_domains[key] = domain_key(alias_of)
        else:
            self._alias_domains.pop(key, None)

    # -- single records ------------------------------------------------------------------

    def domain(self, name: str) -> pb.Domain | None:
        raw = self.data.get(domain_key(name))
        return pb.Domain.FromString(raw) if raw is not None else None

    def is_local_domain(self, name: str) -> bool:
        key = domain_key(name)
        real = self._alias_domains.get(key)
        # an alias domain is local while its real domain is (a real domain deleted under it
        # leaves it answering for nothing: not ours, rather than every RCPT a 550)
        return key in self.data if real is None else real in self.data

    def real_domain(self, name: str) -> pb.Domain | None:
        """The domain whose records answer for `name`: itself, or the real domain of an
        alias domain (one level only: the directory never makes an alias of an alias)."""
        domain = self.domain(name)
        if domain is not None and domain.alias_of:
            domain = self.domain(domain.alias_of)
            if domain is not None and domain.alias_of:
                return None
        return domain

    def alias_domains(self, real: str) -> list[str]:
        """The names of the alias domains of one real domain."""
        key = domain_key(real)
        return sorted(pb.Domain.FromString(self.data[k]).name
                      for k, v in list(self._alias_domains.items())
                      if v == key and k in self.data)

    def real_address(self, address: str) -> str:
        """`address` (canonical) in its domain's real domain: joe@alias.test is
        joe@real.test; any other address as it is."""
        local, domain_name = split(address)
        if not domain_name or domain_key(domain_name) not in self._alias_domains:
            return address
        real = self.real_domain(domain_name)
        return f"{local}@{real.name}" if real is not None else address

    def login_mailbox(self, user: str) -> pb.Mailbox | None:
        """The mailbox a login name means: joe@alias.test logs in as joe@real.test (as with
        vpopmail's alias domains); the record's address is the real one."""
        return self.mailbox(self.real_address(canonical(user)))

    def mailbox(self, address: str) -> pb.Mailbox | None:
        raw = self.data.get(record_key("mailbox", address))
        return pb.Mailbox.FromString(raw) if raw is not None else None

    def alias(self, address: str) -> pb.Alias | None:
        raw = self.data.get(record_key("alias", address))
        return pb.Alias.FromString(raw) if raw is not None else None

    def guarded_list(self, address: str) -> bool:
        """Is `address` the own address of a list not open to every poster? Without
        parsing the list's record (its members: mailing_list() does that)."""
        return record_key("list", address) in self.guarded_lists

    def mailing_list(self, address: str) -> pb.MailingList | None:
        raw = self.data.get(record_key("list", address))
        return pb.MailingList.FromString(raw) if raw is not None else None

    # -- listings ------------------------------------------------------------------------

    def domains(self) -> list[pb.Domain]:
        return sorted((pb.Domain.FromString(v) for k, v in self.data.items()
                       if k.startswith("domain.")), key=lambda d: d.name)

    def records(self, kind: str, domain: str = "") -> list[bytes]:
        prefix = f"{kind}.{_enc(to_ascii_domain(domain))}." if domain else f"{kind}."
        return [v for k, v in sorted(self.data.items()) if k.startswith(prefix)]

    # -- one step of resolution ----------------------------------------------------------

    def resolve(self, address: str) -> pb.Resolution:
        """What the directory says of one address (no recursive expansion of aliases)."""
        address, domain, answering = self._answering(address)
        res = pb.Resolution(address=address)
        if domain is None:
            res.kind = pb.RESOLUTION_KIND_NOT_LOCAL
            return res
        res.resolved = f"{split(address)[0]}@{domain.name}"
        if answering is not None:
            self._record(f"{answering}@{domain.name}", res)
            if res.kind == pb.RESOLUTION_KIND_LIST and address[len(answering)] != "@":
                self._list_command(address, res)
        elif domain.catch_all == pb.CATCH_ALL_ACTION_DELIVER:
            res.kind = pb.RESOLUTION_KIND_CATCH_ALL
            res.mailbox = domain.catch_all_target
        elif domain.catch_all == pb.CATCH_ALL_ACTION_BOUNCE:
            res.kind = pb.RESOLUTION_KIND_BOUNCE
        elif domain.catch_all == pb.CATCH_ALL_ACTION_DELETE:
            res.kind = pb.RESOLUTION_KIND_DELETE
        else:
            res.kind = pb.RESOLUTION_KIND_UNKNOWN
        return res

    def accepts(self, address: str) -> bool:
        """May smtp-ingress accept RCPT TO this local address? (no backscatter)

        Whatever resolve() does not answer UNKNOWN, NOT_LOCAL or BOUNCE: a catch-all that
        bounces refuses at RCPT, as chkuser does for vpopmail's bounce-no-mailbox, rather
        than accept and bounce to a sender that spam forges. Decided from the keys alone:
        asked at every RCPT, it must not parse a list's record and copy its members (6 ms
        for 40,000)."""
        address, domain, answering = self._answering(address)
        if domain is None:
            return False
        # answering is a prefix of address: "@" follows it unless it is the extension's base
        if answering is not None and address[len(answering)] != "@":
            # through its extension's base (two keys more, for such addresses only): a
            # list's command address is refused, but for -owner and -request, -return (where
            # what the list sent bounces to: any list, one closed since still gets them) and
            # the subscribe commands of a list that takes them by mail
            key = f"{_enc(to_ascii_domain(domain.name))}.{_enc(answering)}"
            if f"list.{key}" in self.data and not any(
                    f"{kind}.{key}" in self.data for kind in ("mailbox", "alias")):
                extension = split(address)[0][len(answering) + 1:]
                if (extension in listaddresses.OWNER_EXTENSIONS
                        or listaddresses.is_return(extension)):
                    return True
                return f"list.{key}" in self._by_mail and listcookie.parse(extension) is not None
        return answering is not None or domain.catch_all in (pb.CATCH_ALL_ACTION_DELIVER,
                                                             pb.CATCH_ALL_ACTION_DELETE)

    def _answering(self, address: str) -> tuple[str, pb.Domain | None, str | None]:
        """(canonical address, the domain whose records answer for it (an alias domain's
        real one; None: not ours), the local part whose record answers: the address's own,
        else the one without its extension (joe+news@: joe@'s); None: no record)."""
        address = canonical(address)
        local, domain_name = split(address)
        domain = self.real_domain(domain_name) if domain_name else None
        if domain is None:
            return address, None, None
        at = _enc(domain_name if domain.name == domain_name else to_ascii_domain(domain.name))
        if self._has_record(at, local):
            return address, domain, local
        stripped = extensions.base(local, self.delimiters) if self.delimiters else None
        if stripped and self._has_record(at, stripped):
            return address, domain, stripped
        return address, domain, None

    def list_command(self, address: str) -> tuple[str, str] | None:
        """(the list, the -owner address to write to) when `address` is a command address
        of a list (news-subscribe@ with no record of its own) that accepts() refuses, else
        None."""
        res = self.resolve(address)
        if res.kind != pb.RESOLUTION_KIND_LIST_COMMAND:
            return None
        return res.resolved, listaddresses.owner_address(res.address, res.resolved)

    def _list_command(self, address: str, res: pb.Resolution) -> None:
        """`res` answers for the list `res.resolved` reached through an extension: the
        command address is never the list; -owner and -request are an alias of its owner."""
        owner = self.mailing_list(res.resolved)
        del res.targets[:]
        if (listaddresses.extension(address, res.resolved) in listaddresses.OWNER_EXTENSIONS
                and owner is not None and owner.owner):
            res.kind = pb.RESOLUTION_KIND_ALIAS
            res.targets.append(owner.owner)
        else:
            res.kind = pb.RESOLUTION_KIND_LIST_COMMAND

    def _has_record(self, domain: str, local: str) -> bool:
        """Is there a mailbox, alias or list at `local` (canonical) in `domain` (encoded)?"""
        at = f"{domain}.{_enc(local)}"
        return any(f"{kind}.{at}" in self.data for kind in ("mailbox", "alias", "list"))

    def _record(self, address: str, res: pb.Resolution) -> None:
        """Fill `res` from the mailbox, alias or list at `address` (there is one)."""
        if (mailbox := self.mailbox(address)) is not None:
            res.kind = pb.RESOLUTION_KIND_MAILBOX
            res.mailbox = mailbox.address
            res.targets.extend(mailbox.forward_to)
        elif (alias := self.alias(address)) is not None:
            res.kind = pb.RESOLUTION_KIND_ALIAS
            res.targets.extend(alias.targets)
        elif (mlist := self.mailing_list(address)) is not None:
            res.kind = pb.RESOLUTION_KIND_LIST
            res.targets.extend(mlist.members)
        res.resolved = address


def record_prefix(kind: str, domain: str) -> str:
    """Key prefix of every `kind` record (mailbox, alias, list) of one domain."""
    return f"{kind}.{_enc(to_ascii_domain(domain))}."
