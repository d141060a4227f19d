"""`mailyard domain|user|alias|forward|catchall|list`: vadddomain, vadduser, valias & co.

Each command is one Directory RPC (a listing one per page); output is plain text, one record
per line:

    mailyard domain add example.com
    mailyard domain add example.net --alias-of example.com   # vaddaliasdomain
    mailyard user add joe@example.com --password-stdin < secret
    mailyard user list example.com
    mailyard alias add info@example.com joe@example.com ann@example.com
    mailyard catchall set example.com joe@example.com
    mailyard list list example.com           # lists with owner and members
    mailyard list show news@example.com      # one member per line
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.directory.v1 import directory_pb2_grpc as pb_grpc
from mailyard.cli import pages
from mailyard.cli.argtypes import UINT64, integer
from mailyard.cli.endpoints import channel
from mailyard.cli.vacation import iso_time

_CATCH_ALL_NAMES = {
    pb.CATCH_ALL_ACTION_UNSPECIFIED: "none",
    pb.CATCH_ALL_ACTION_DELIVER: "deliver",
    pb.CATCH_ALL_ACTION_BOUNCE: "bounce",
    pb.CATCH_ALL_ACTION_DELETE: "delete",
}


def _stub() -> pb_grpc.DirectoryStub:
    return pb_grpc.DirectoryStub(channel("DIRECTORY"))


def _fail(message: str) -> int:
    print(f"mailyard: {message}", file=sys.stderr)
    return 1


def _password(args: argparse.Namespace) -> str | None:
    """One line from stdin (--password-stdin) or a prompt asked twice; None on mismatch.
    "" with --password-hash (the request then carries the hash instead)."""
    if args.password_hash is not None:
        return ""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Retype new password: ") != first:
        return None
    return first


def _password_hash(args: argparse.Namespace) -> str:
    """--password-hash HASH, or "-": one line from stdin (a hash on the command line is
    visible to other local users in ps)."""
    if args.password_hash == "-":  # noqa: S105  (not a password: the stdin marker)
        return sys.stdin.readline().strip()
    return str(args.password_hash or "")


def _mailbox_line(mailbox: pb.Mailbox) -> str:
    fields = [mailbox.address, f"quota={mailbox.quota_bytes or 'none'}"]
    if mailbox.quota_messages:
        fields.append(f"quota_messages={mailbox.quota_messages}")
    if mailbox.cram_md5_secret:
        fields.append("cram-md5=on")
    if mailbox.forward_to:
        fields.append(f"forward={','.join(mailbox.forward_to)}")
        fields.append(f"keep_copy={'yes' if mailbox.keep_copy else 'no'}")
    auto = mailbox.autoresponse
    if auto.body:  # as `mailyard vacation show` says it: on, or off (kept, not sent)
        fields.append(f"vacation={'on' if auto.enabled else 'off'}")
        if auto.HasField("start"):
            fields.append(f"vacation_from={iso_time(auto.start)}")
        if auto.HasField("end"):
            fields.append(f"vacation_until={iso_time(auto.end)}")
    fields.append(f"maildir={mailbox.maildir}")
    if mailbox.gecos:
        fields.append(f"gecos={mailbox.gecos}")
    return "\t".join(fields)


def _domain_line(domain: pb.Domain) -> str:
    if domain.alias_of:
        return f"{domain.name}\talias_of={domain.alias_of}"
    action = _CATCH_ALL_NAMES.get(domain.catch_all, "none")
    if domain.catch_all == pb.CATCH_ALL_ACTION_DELIVER:
        action = domain.catch_all_target
    return f"{domain.name}\tcatchall={action}"


# -- domain ---------------------------------------------------------------------------------

def _domain_add(args: argparse.Namespace) -> int:
    domain = _stub().AddDomain(pb.AddDomainRequest(name=args.domain,
                                                   alias_of=args.alias_of))
    if domain.alias_of:
        print(f"added domain {domain.name}, an alias domain of {domain.alias_of}")
    else:
        print(f"added domain {domain.name}")
    return 0


def _domain_del(args: argparse.Namespace) -> int:
    _stub().DeleteDomain(pb.DeleteDomainRequest(name=args.domain,
                                                with_aliases=args.with_aliases))
    print(f"deleted domain {args.domain} and everything in it")
    return 0


def _domain_list(args: argparse.Namespace) -> int:
    for domain in pages.records(_stub().ListDomains, pb.ListDomainsRequest(), "domains"):
        print(_domain_line(domain))
    return 0


# -- user -----------------------------------------------------------------------------------

def _user_add(args: argparse.Namespace) -> int:
    password = _password(args)
    if password is None:
        return _fail("passwords do not match")
    mailbox = _stub().AddMailbox(pb.AddMailboxRequest(
        address=args.address, password=password, password_hash=_password_hash(args),
        enable_cram_md5=args.cram_md5, quota_bytes=args.quota,
        quota_messages=args.quota_messages, gecos=args.gecos))
    print(f"added user {mailbox.address}")
    return 0


def _user_gecos(args: argparse.Namespace) -> int:
    print(_mailbox_line(_stub().SetGecos(pb.SetGecosRequest(address=args.address,
                                                            gecos=args.gecos))))
    return 0


def _user_del(args: argparse.Namespace) -> int:
    _stub().DeleteMailbox(pb.AddressRequest(address=args.address))
    print(f"deleted user {args.address}")
    return 0


def _user_passwd(args: argparse.Namespace) -> int:
    password = _password(args)
    if password is None:
        return _fail("passwords do not match")
    mailbox = _stub().SetPassword(pb.SetPasswordRequest(
        address=args.address, password=password, password_hash=_password_hash(args),
        enable_cram_md5=args.cram_md5))
    print(f"changed password of {mailbox.address}")
    return 0


def _user_quota(args: argparse.Namespace) -> int:
    mailbox = _stub().SetQuota(pb.SetQuotaRequest(
        address=args.address, quota_bytes=args.bytes, quota_messages=args.messages))
    print(_mailbox_line(mailbox))
    return 0


def _user_list(args: argparse.Namespace) -> int:
    for mailbox in pages.records(_stub().ListMailboxes,
                                 pb.ListMailboxesRequest(domain=args.domain), "mailboxes"):
        print(_mailbox_line(mailbox))
    return 0


# -- alias, forward, catchall ---------------------------------------------------------------

def _alias_add(args: argparse.Namespace) -> int:
    alias = _stub().AddAlias(pb.AddAliasRequest(address=args.address, targets=args.targets))
    print(f"added alias {alias.address} -> {','.join(alias.targets)}")
    return 0


def _alias_del(args: argparse.Namespace) -> int:
    _stub().DeleteAlias(pb.AddressRequest(address=args.address))
    print(f"deleted alias {args.address}")
    return 0


def _alias_list(args: argparse.Namespace) -> int:
    for alias in pages.records(_stub().ListAliases, pb.ListAliasesRequest(domain=args.domain),
                               "aliases"):
        print(f"{alias.address}\t{','.join(alias.targets)}")
    return 0


def _forward_set(args: argparse.Namespace) -> int:
    mailbox = _stub().SetForward(pb.SetForwardRequest(
        address=args.address, targets=args.targets, keep_copy=args.keep_copy))
    print(_mailbox_line(mailbox))
    return 0


def _forward_clear(args: argparse.Namespace) -> int:
    mailbox = _stub().ClearForward(pb.AddressRequest(address=args.address))
    print(_mailbox_line(mailbox))
    return 0


def _catchall_set(args: argparse.Namespace) -> int:
    word = args.target.lower()
    actions = {"bounce": pb.CATCH_ALL_ACTION_BOUNCE, "delete": pb.CATCH_ALL_ACTION_DELETE,
               "none": pb.CATCH_ALL_ACTION_UNSPECIFIED}
    if word in actions:
        request = pb.SetCatchAllRequest(domain=args.domain, action=actions[word])
    else:
        request = pb.SetCatchAllRequest(domain=args.domain, action=pb.CATCH_ALL_ACTION_DELIVER,
                                        target=args.target)
    print(_domain_line(_stub().SetCatchAll(request)))
    return 0


# -- mailing lists --------------------------------------------------------------------------

# who may post (ezmlm's -u, Mailman's generic_nonmember_action); unset is open
POSTING = {"open": pb.POSTING_POLICY_OPEN, "members": pb.POSTING_POLICY_MEMBERS,
           "announce": pb.POSTING_POLICY_ANNOUNCE}


def _posting(mlist: pb.MailingList) -> str:
    name = next((k for k, v in POSTING.items() if v == mlist.posting), "open")
    return name + (f"\tposters={','.join(mlist.posters)}" if mlist.posters else "")


# subscribing and leaving by mail (ezmlm-manage): unset is closed
SUBSCRIPTION = {"closed": pb.SUBSCRIPTION_POLICY_CLOSED,
                "confirm": pb.SUBSCRIPTION_POLICY_CONFIRM}


SUBSCRIPTION_HELP = ("closed: only `mailyard list member` changes the members (the "
                     "default); confirm: LIST+subscribe@ / LIST+unsubscribe@ with a "
                     "confirmation by reply (ezmlm's double opt-in)")


def _list_line(mlist: pb.MailingList) -> str:
    # an open, closed list's line as before the settings: scripts read these lines
    posting = (f"\tposting={_posting(mlist)}" if mlist.posters or mlist.posting not in (
        pb.POSTING_POLICY_UNSPECIFIED, pb.POSTING_POLICY_OPEN) else "")
    if mlist.subscription == pb.SUBSCRIPTION_POLICY_CONFIRM:
        posting += "\tsubscription=confirm"
    return f"{mlist.address}\towner={mlist.owner}{posting}\tmembers={','.join(mlist.members)}"


def _list_add(args: argparse.Namespace) -> int:
    mlist = _stub().AddList(pb.AddListRequest(address=args.address, owner=args.owner,
                                              members=args.members,
                                              posting=POSTING[args.posting],
                                              posters=args.posters,
                                              subscription=SUBSCRIPTION[args.subscription]))
    print(f"added list {_list_line(mlist)}")
    return 0


def _list_set(args: argparse.Namespace) -> int:
    mlist = _stub().SetListPosting(pb.SetListPostingRequest(
        address=args.address, posting=POSTING[args.posting], posters=args.posters))
    print(f"{mlist.address}\tposting={_posting(mlist)}")
    return 0


def _list_subscription(args: argparse.Namespace) -> int:
    mlist = _stub().SetListSubscription(pb.SetListSubscriptionRequest(
        address=args.address, subscription=SUBSCRIPTION[args.subscription]))
    name = next((k for k, v in SUBSCRIPTION.items() if v == mlist.subscription), "closed")
    print(f"{mlist.address}\tsubscription={name}")
    return 0


def _posting_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument("--posting", choices=list(POSTING), default=default,
                        required=default is None,
                        help="who may post: anyone (open), the members (envelope sender or "
                             "From:), or the owner alone (announce); posters always may")
    parser.add_argument("--poster", dest="posters", action="append", default=[],
                        metavar="ADDRESS", help="may post whatever the policy (repeatable)")


def _list_del(args: argparse.Namespace) -> int:
    _stub().DeleteList(pb.AddressRequest(address=args.address))
    print(f"deleted list {args.address}")
    return 0


def _member_add(args: argparse.Namespace) -> int:
    mlist = _stub().AddListMember(pb.ListMemberRequest(list=args.list, member=args.member))
    print(_list_line(mlist))
    return 0


def _member_del(args: argparse.Namespace) -> int:
    mlist = _stub().DeleteListMember(pb.ListMemberRequest(list=args.list, member=args.member))
    print(_list_line(mlist))
    return 0


def _lists(args: argparse.Namespace) -> int:
    for mlist in pages.records(_stub().ListLists, pb.ListListsRequest(domain=args.domain),
                               "lists"):
        print(_list_line(mlist))
    return 0


def _list_show(args: argparse.Namespace) -> int:
    """One member per line (owner on stderr), so `| wc -l` counts members."""
    mlist = _stub().GetList(pb.AddressRequest(address=args.address))
    by_mail = (" subscription=confirm"
               if mlist.subscription == pb.SUBSCRIPTION_POLICY_CONFIRM else "")
    print(f"# {mlist.address} owner={mlist.owner}{by_mail} members={len(mlist.members)}",
          file=sys.stderr)
    for member in mlist.members:
        print(member)
    return 0


def _resolve(args: argparse.Namespace) -> int:
    res = _stub().Resolve(pb.AddressRequest(address=args.address))
    kind = pb.ResolutionKind.Name(res.kind).removeprefix("RESOLUTION_KIND_").lower()
    fields = [res.address, kind]
    if res.resolved and res.resolved != res.address:  # an alias domain, an extension
        fields.append(f"as={res.resolved}")
    if res.mailbox:
        fields.append(f"mailbox={res.mailbox}")
    if res.targets:
        fields.append(f"targets={','.join(res.targets)}")
    print("\t".join(fields))
    return 0


# -- registration ---------------------------------------------------------------------------

class _Intermixed(argparse.ArgumentParser):
    """Options may sit between positionals: `list add L --owner O M1 M2`."""

    _inner = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._inner or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def _group(sub: Any, name: str, help_text: str) -> Any:
    parser = sub.add_parser(name, help=help_text)
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION",
                                 parser_class=_Intermixed)


def _add(sub: Any, name: str, func: Any, help_text: str) -> Any:
    parser = sub.add_parser(name, help=help_text)
    parser.set_defaults(func=func)
    return parser


def _password_options(parser: argparse.ArgumentParser) -> None:
    way = parser.add_mutually_exclusive_group()
    way.add_argument("--password-stdin", action="store_true",
                     help="read the password as one line from stdin (no prompt)")
    way.add_argument("--password-hash", metavar="HASH",
                     help="store an existing hash as it is (argon2id, or crypt(3): DES, $1$, "
                          "$5$, $6$, $2y$; '-' reads it from stdin); the first login "
                          "replaces it with the platform's argon2id hash")
    parser.add_argument("--cram-md5", action="store_true",
                        help="also store a CRAM-MD5 secret (plaintext-equivalent; opt-in)")


def register(sub: Any) -> None:
    domain = _group(sub, "domain", "virtual domains (vadddomain, vdeldomain)")
    parser = _add(domain, "add", _domain_add, "add a domain")
    parser.add_argument("domain")
    parser.add_argument("--alias-of", default="", metavar="DOMAIN",
                        help="an alias domain (vaddaliasdomain): each of its addresses is "
                             "the same address in DOMAIN")
    parser = _add(domain, "del", _domain_del, "delete a domain and everything in it")
    parser.add_argument("domain")
    parser.add_argument("--with-aliases", action="store_true",
                        help="delete the domain's alias domains with it")
    _add(domain, "list", _domain_list, "list domains")

    user = _group(sub, "user", "mailboxes (vadduser, vdeluser, vpasswd, vsetuserquota)")
    parser = _add(user, "add", _user_add, "add a mailbox")
    parser.add_argument("address")
    _password_options(parser)
    parser.add_argument("--quota", type=integer(0, UINT64), default=0, metavar="BYTES",
                        help="mailbox quota in bytes (0 = none)")
    parser.add_argument("--quota-messages", type=integer(0, UINT64), default=0,
                        metavar="COUNT")
    parser.add_argument("--gecos", default="", metavar="NAME", help="the user's name")
    _add(user, "del", _user_del, "delete a mailbox").add_argument("address")
    parser = _add(user, "gecos", _user_gecos, "set a mailbox's user name (vmoduser -c)")
    parser.add_argument("address")
    parser.add_argument("gecos", metavar="NAME")
    parser = _add(user, "passwd", _user_passwd, "set a mailbox's password")
    parser.add_argument("address")
    _password_options(parser)
    parser = _add(user, "quota", _user_quota, "set a mailbox's quota")
    parser.add_argument("address")
    parser.add_argument("bytes", type=integer(0, UINT64), help="quota in bytes (0 = none)")
    parser.add_argument("--messages", type=integer(0, UINT64), default=0, metavar="COUNT")
    _add(user, "list", _user_list, "list mailboxes").add_argument("domain", nargs="?",
                                                                  default="")

    alias = _group(sub, "alias", "aliases (valias)")
    parser = _add(alias, "add", _alias_add, "add an alias")
    parser.add_argument("address")
    parser.add_argument("targets", nargs="+", metavar="TARGET")
    _add(alias, "del", _alias_del, "delete an alias").add_argument("address")
    _add(alias, "list", _alias_list, "list aliases").add_argument("domain", nargs="?",
                                                                  default="")

    forward = _group(sub, "forward", "forwards of a mailbox")
    parser = _add(forward, "set", _forward_set, "forward a mailbox's mail")
    parser.add_argument("address")
    parser.add_argument("targets", nargs="+", metavar="TARGET")
    parser.add_argument("--keep-copy", action="store_true", help="deliver to the mailbox too")
    _add(forward, "clear", _forward_clear, "stop forwarding").add_argument("address")

    catchall = _group(sub, "catchall", "what happens to mail for unknown users of a domain")
    parser = _add(catchall, "set", _catchall_set, "set a domain's catch-all")
    parser.add_argument("domain")
    parser.add_argument("target", metavar="TARGET|bounce|delete|none")

    mlist = _group(sub, "list", "mailing lists")
    parser = _add(mlist, "add", _list_add, "add a mailing list")
    parser.add_argument("address")
    parser.add_argument("--owner", required=True, help="envelope sender; bounces go there")
    parser.add_argument("members", nargs="*", metavar="MEMBER")
    _posting_options(parser, "open")
    parser.add_argument("--subscription", choices=list(SUBSCRIPTION), default="closed",
                        help=SUBSCRIPTION_HELP)
    parser = _add(mlist, "set", _list_set, "set who may post to a list (replaces the posters)")
    parser.add_argument("address")
    _posting_options(parser, None)
    parser = _add(mlist, "subscription", _list_subscription,
                  "set whether people join and leave a list by mail")
    parser.add_argument("address")
    parser.add_argument("subscription", choices=list(SUBSCRIPTION), help=SUBSCRIPTION_HELP)
    _add(mlist, "del", _list_del, "delete a mailing list").add_argument("address")
    _add(mlist, "list", _lists, "list mailing lists with owner and members"
         ).add_argument("domain", nargs="?", default="")
    _add(mlist, "show", _list_show, "a list's members, one per line").add_argument("address")
    member = mlist.add_parser("member", help="members of a list")
    members = member.add_subparsers(dest="member_command", required=True, metavar="ACTION")
    for name, func in (("add", _member_add), ("del", _member_del)):
        parser = _add(members, name, func, f"{name} a member")
        parser.add_argument("list")
        parser.add_argument("member")

    _add(sub, "resolve", _resolve, "what a delivery to an address does").add_argument("address")
