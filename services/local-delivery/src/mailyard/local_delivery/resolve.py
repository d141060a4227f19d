"""What one local recipient expands to: mailboxes to write, addresses to forward to, lists
to send, or a refusal (vpopmail's valias / .qmail / catch-all logic on the directory).

DirectoryView.resolve() answers one step; this module follows aliases and catch-alls
recursively inside the process, stopping at a cycle or at MAX_DEPTH (both bounce).
Forwards of a mailbox and list mail are not followed here: they go back through the queue
(reinject.py) with a Delivered-To line, so a forward cycle through other hosts or other
mailboxes ends in the Delivered-To loop check instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core import listaddresses, listcookie
from mailyard.core.addresses import split
from mailyard.core.directory import DirectoryView, canonical

MAX_DEPTH = 20

NO_MAILBOX = ("Sorry, no mailbox here by that name. (#5.1.1)", "5.1.1")
LOOPING = ("This message is looping: it already has my Delivered-To line. (#5.4.6)", "5.4.6")
ALIAS_LOOP = ("Sorry, this address is part of an alias loop. (#5.4.6)", "5.4.6")
TOO_DEEP = ("Sorry, aliases nest too deep. (#5.4.6)", "5.4.6")
NOT_LOCAL = ("Sorry, that domain is no longer local here. (#4.3.5)", "4.3.5")
NO_OWNER = ("Sorry, this list has no owner to take bounces. (#5.7.2)", "5.7.2")
SRS_INVALID = ("Sorry, this SRS address is invalid or expired. (#5.1.1)", "5.1.1")
LIST_COMMAND = "Sorry, {list} takes no commands by mail; write to {owner}. (#5.7.1)"
NO_PROGRAMS = ("Sorry, program delivery (|command) is not supported here. (#5.7.1)", "5.7.1")


@dataclass(frozen=True)
class ListCommand:
    """Mail to a command address of a list that takes subscriptions by mail (subscribe.py)."""

    list_address: str
    owner: str
    delimiter: str        # the one the command address was written with
    command: listcookie.Command


@dataclass
class ListSend:
    address: str
    owner: str
    members: list[str]
    posting: int = pb.POSTING_POLICY_UNSPECIFIED
    posters: list[str] = field(default_factory=list)
    subscription: int = pb.SUBSCRIPTION_POLICY_UNSPECIFIED


@dataclass
class Expansion:
    address: str
    mailboxes: dict[str, pb.Mailbox] = field(default_factory=dict)  # address -> record
    forwards: list[str] = field(default_factory=list)  # reinjected, original sender
    lists: list[ListSend] = field(default_factory=list)
    command: ListCommand | None = None  # a subscribe / unsubscribe of a list (subscribe.py)
    returned: str = ""          # the list whose -return address this is: dropped
    deleted: bool = False       # a catch-all "delete" swallowed it
    failure: tuple[str, str] | None = None   # permanent (reply, enhanced code)
    deferral: tuple[str, str] | None = None  # temporary
    # canonical forms of `forwards`: one copy per address, found without a scan of the list
    forwarded: set[str] = field(default_factory=set)
    # mailboxes other than `address` whose forwards are in `forwards` (reached through an
    # alias or the catch-all): their Delivered-To lines go on the forwarded copy too
    forwarders: list[str] = field(default_factory=list)
    # addresses walked to the end: one reached again through another alias adds nothing
    # (what it leads to is in the sets above), and walking it again made aliases that share
    # targets cost one resolution per path: layers of ten took minutes
    walked: set[str] = field(default_factory=set)

    def add_forward(self, target: str) -> None:
        if (key := canonical(target)) not in self.forwarded:
            self.forwarded.add(key)
            self.forwards.append(target)


def expand(view: DirectoryView, address: str,
           delivered_to: frozenset[str] = frozenset()) -> Expansion:
    """`delivered_to`: the message's Delivered-To addresses. Each address an alias leads to
    is checked against them, as qmail checks every address it delivers to: unchecked, a
    list reached again through an alias of one of its members went round once more."""
    exp = Expansion(canonical(address))
    _walk(view, exp.address, (), exp, delivered_to)
    return exp


def _walk(view: DirectoryView, address: str, path: tuple[str, ...], exp: Expansion,
          delivered_to: frozenset[str]) -> None:
    if exp.failure or exp.deferral:
        return
    if address.startswith("|"):
        exp.failure = NO_PROGRAMS
        return
    # Our own local parts are matched lower-cased (vpopmail); one elsewhere goes out as
    # written, since that host may tell John.Smith@ from john.smith@ (RFC 5321 2.4).
    written, address = address, canonical(address)
    if address in path:
        exp.failure = ALIAS_LOOP
        return
    if address in delivered_to:
        exp.failure = LOOPING
        return
    if address in exp.walked:
        return
    if len(path) >= MAX_DEPTH:
        exp.failure = TOO_DEEP
        return
    _step(view, address, written, path, exp, delivered_to)
    exp.walked.add(address)


def _step(view: DirectoryView, address: str, written: str, path: tuple[str, ...],
          exp: Expansion, delivered_to: frozenset[str]) -> None:
    res = view.resolve(address)
    # the address whose records answered too (joe@alias.test is joe@real.test): a loop
    # through either form is the same loop
    here = (*path, address) if res.resolved in ("", address) else (*path, address,
                                                                      res.resolved)
    kind = res.kind
    if kind == pb.RESOLUTION_KIND_NOT_LOCAL:
        if path:
            exp.add_forward(written)  # an alias pointing elsewhere: the queue routes it
        else:
            exp.deferral = NOT_LOCAL  # the queue thought it local; let it look again
    elif kind == pb.RESOLUTION_KIND_MAILBOX:
        mailbox = view.mailbox(res.mailbox or address)
        if mailbox is None:  # changed under us between the two reads
            exp.deferral = ("Sorry, the directory changed during delivery. (#4.3.0)", "4.3.0")
            return
        for target in res.targets:
            if target.startswith("|"):
                exp.failure = NO_PROGRAMS
                return
            exp.add_forward(target)
        if res.targets and path and address not in exp.forwarders:
            exp.forwarders.append(address)
        if not res.targets or mailbox.keep_copy:
            exp.mailboxes.setdefault(mailbox.address or address, mailbox)
    elif kind == pb.RESOLUTION_KIND_ALIAS:
        for target in res.targets:
            _walk(view, target, here, exp, delivered_to)
    elif kind == pb.RESOLUTION_KIND_LIST:
        list_address = res.resolved or address
        mlist = view.mailing_list(list_address) or pb.MailingList()
        if not any(ls.address == list_address for ls in exp.lists):
            exp.lists.append(ListSend(list_address, mlist.owner, list(res.targets),
                                      mlist.posting, list(mlist.posters),
                                      mlist.subscription))
    elif kind == pb.RESOLUTION_KIND_LIST_COMMAND:
        # news-subscribe@ (RCPT refuses it too): never posted to the list
        extension = listaddresses.extension(address, res.resolved)
        if extension in listaddresses.OWNER_EXTENSIONS:
            exp.failure = NO_OWNER  # -owner of a list from before owners were required
            return
        if listaddresses.is_return(extension) and not path:
            # what came back of the list's own requests and notes: never posted or answered
            exp.returned = res.resolved
            return
        named = view.mailing_list(res.resolved) if not path else None
        # only as the recipient itself: reached through an alias, its answer would stand for
        # the alias's other targets' deliveries (never written)
        if (named is not None and named.subscription == pb.SUBSCRIPTION_POLICY_CONFIRM
                and (command := listcookie.parse(extension)) is not None):
            delimiter = address[len(split(res.resolved)[0])]
            exp.command = ListCommand(res.resolved, named.owner, delimiter, command)
            return
        exp.failure = (LIST_COMMAND.format(
            list=res.resolved, owner=listaddresses.owner_address(address, res.resolved)),
            "5.7.1")
    elif kind == pb.RESOLUTION_KIND_CATCH_ALL:
        if not res.mailbox:
            exp.failure = NO_MAILBOX
            return
        _walk(view, res.mailbox, here, exp, delivered_to)
    elif kind == pb.RESOLUTION_KIND_DELETE:
        exp.deleted = True
    else:  # BOUNCE, UNKNOWN
        exp.failure = NO_MAILBOX
