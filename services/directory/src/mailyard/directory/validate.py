"""Validation of what operators type: domains, addresses, control file names and values.

Domains are stored as lower-case IDNA A-labels computed the way every reader computes them
(mailyard.core.addresses.to_ascii_domain), so a key written here is the key a reader looks up.
Local parts become a path on the mail volume ("<domain>/<local>/Maildir"), so they are held
to RFC 5322 dot-atom and never contain "/".
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core import control, identity, smtproutes
from mailyard.core.addresses import split, to_ascii_domain
from mailyard.core.directory import canonical
from mailyard.directory.errors import Refused, invalid

# fullmatch, not match with "$": "$" also matches before a final "\n", which let
# "example\n.com" through (a line break in a KV key, a Maildir path, a Delivered-To line).
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# RFC 5322 atext without "/" (a path separator on the mail volume); non-ASCII letters are
# welcome (SMTPUTF8).
_ATEXT = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-=?^_`{|}~")

POSITIVE_INTEGER_FILES = ("databytes", "queuelifetime", "concurrencyremote", "concurrencylocal",
                          "greylist")
# smtp-ingress starts a pending greylist triplet over when it is not retried within a day
# (greylist.RETRY_WINDOW): with a delay of a day or more no new sender ever got through.
GREYLIST_BELOW = 86400


def domain(name: str) -> str:
    """The A-label of a domain name, or INVALID_ARGUMENT."""
    raw = name.strip().rstrip(".")
    if not raw:
        raise invalid("a domain name is required")
    ascii_name = to_ascii_domain(raw)
    if len(ascii_name) > 253:
        raise invalid(f"domain name too long: {name!r}")
    labels = ascii_name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise invalid(f"not a valid domain name: {name!r}")
    if labels[-1].isdigit():
        raise invalid(f"not a domain name (an IP address?): {name!r}")
    return ascii_name


def local_part(local: str, original: str) -> str:
    if not local:
        raise invalid(f"address needs a local part: {original!r}")
    if len(local.encode()) > 64:
        raise invalid(f"local part longer than 64 octets: {original!r}")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise invalid(f"local part must not start or end with a dot or hold two: {original!r}")
    for c in local:
        if c != "." and c not in _ATEXT and not (ord(c) > 127 and c.isprintable()
                                                 and not c.isspace()):
            raise invalid(f"character {c!r} not allowed in the local part of {original!r}")
    return local


def address(text: str) -> str:
    """Canonical form of a local address (lower case, A-label domain), or INVALID_ARGUMENT."""
    text = text.strip()
    local, dom = split(text)
    if not dom:
        raise invalid(f"not an address (local@domain): {text!r}")
    local_part(local, text)
    # the checked domain, not the text's: "joe@ example.com" is joe@example.com (as in
    # target()), not a key under " example.com" that no domain record matches
    return canonical(f"{local}@{domain(dom)}")


def target(text: str) -> str:
    """A forwarding target anywhere: local part kept as given (RFC 5321 2.4), domain A-label."""
    text = text.strip()
    local, dom = split(text)
    if not dom:
        raise invalid(f"not an address (local@domain): {text!r}")
    local_part(local, text)
    return f"{local}@{domain(dom)}"


def targets(texts: list[str] | tuple[str, ...], what: str = "target") -> list[str]:
    # ordered and deduplicated without a lookup in a list per target (quadratic: 40,000
    # targets held the event loop 10 s)
    out = list(dict.fromkeys(target(text) for text in texts))
    if not out:
        raise invalid(f"at least one {what} address is required")
    return out


MAX_GECOS = 256


def posting(value: pb.PostingPolicy.ValueType) -> pb.PostingPolicy.ValueType:
    """A list's posting policy as sent: one the proto defines (proto3 passes any number)."""
    if value not in pb.PostingPolicy.values():
        raise invalid(f"no posting policy {value}: open, members or announce")
    return value


def subscription(value: pb.SubscriptionPolicy.ValueType) -> pb.SubscriptionPolicy.ValueType:
    """A list's subscription policy as sent: one the proto defines."""
    if value not in pb.SubscriptionPolicy.values():
        raise invalid(f"no subscription policy {value}: closed or confirm")
    return value


def gecos(text: str) -> str:
    """A user's name (vpopmail's gecos): one line of printable text, "" allowed."""
    text = text.strip()
    if len(text) > MAX_GECOS:
        raise invalid(f"gecos longer than {MAX_GECOS} characters")
    if any(not c.isprintable() for c in text):
        raise invalid("gecos must be one line without control characters")
    return text


# A vacation message becomes the header and body of a reply local-delivery writes: one line
# of subject (a CR or LF there would start a header of the sender's choosing), a body of
# text. 64 KiB is pages of text, and what every reply carries.
MAX_AUTO_SUBJECT = 200
MAX_AUTO_BODY = 65536


def _breaks_text(c: str) -> bool:
    """A control character (C0, DEL, C1: line ends, escapes) or a line / paragraph
    separator. Not str.isprintable(), which also refuses the no-break space and the
    zero-width joiner of emoji sequences: text people write."""
    return unicodedata.category(c) in ("Cc", "Zl", "Zp")


def autoresponse(auto: pb.Autoresponse) -> pb.Autoresponse:
    """The Autoresponse to store: subject stripped, body with LF line ends; or
    INVALID_ARGUMENT."""
    out = pb.Autoresponse()
    out.CopyFrom(auto)
    out.subject = auto.subject.strip()
    if len(out.subject) > MAX_AUTO_SUBJECT:
        raise invalid(f"vacation subject longer than {MAX_AUTO_SUBJECT} characters")
    if any(_breaks_text(c) for c in out.subject):
        raise invalid("vacation subject must be one line without control characters")
    out.body = auto.body.replace("\r\n", "\n").replace("\r", "\n")
    if not out.body.strip():
        raise invalid("vacation body is empty")
    if len(out.body.encode()) > MAX_AUTO_BODY:
        raise invalid(f"vacation body longer than {MAX_AUTO_BODY} bytes")
    if any(_breaks_text(c) and c not in "\n\t" for c in out.body):
        raise invalid("vacation body must be text: no control characters but line ends "
                      "and tabs")
    if auto.HasField("start") and auto.HasField("end") and (
            auto.end.ToNanoseconds() <= auto.start.ToNanoseconds()):
        raise invalid("vacation end must come after its start")
    return out


def control_name(name: str) -> str:
    """A control file name that is also a valid KV key."""
    if not (control.valid_name(name) and name.isascii() and ".." not in name
            and not name.endswith(".") and len(name) <= 128):
        raise invalid(f"not a valid control file name: {name!r}")
    return name


def known_control_name(name: str) -> str:
    """A name some service reads: a typo (`databyte`) would otherwise be stored and do
    nothing, silently."""
    name = control_name(name)
    for base in control.PER_DOMAIN_FILES:
        domain = name[len(base) + 1:] if name.startswith(base + ".") else ""
        if domain:
            # read under the A-label in lower case: any other spelling would do nothing
            if domain != to_ascii_domain(domain) or not all(
                    _LABEL.fullmatch(x) for x in domain.split(".")):
                raise invalid(f"{base}.DOMAIN: {domain!r} is not a domain in lower case")
            return name
    if name not in control.KNOWN_FILES:
        raise invalid(f"unknown control file {name!r}; known: {', '.join(control.KNOWN_FILES)}")
    return name


# smtp-ingress's sender-check policies (the first word is what counts)
POLICY_WORDS = {"spfpolicy": ("tag", "reject"), "dmarcpolicy": ("reject", "tag"),
                "srs": ("on", "off")}  # local-delivery's SRS for forwards


def control_text(name: str, text: str) -> str:
    """The text to store: validated where Mailyard knows the file, ending in a newline."""
    if "\x00" in text:
        raise invalid(f"control/{name} must not contain NUL")
    if text and not text.endswith("\n"):
        text += "\n"
    if name in POSITIVE_INTEGER_FILES:
        values = control.lines(text)
        if len(values) != 1 or not values[0].isdigit() or int(values[0]) <= 0:
            raise invalid(f"control/{name} must be one positive integer, got {text.strip()!r}")
        if name == "greylist" and int(values[0]) >= GREYLIST_BELOW:
            raise invalid(f"control/greylist must be below {GREYLIST_BELOW} seconds: a sender "
                          f"that has not retried within a day is greylisted again")
    elif name == "smtproutes":
        try:
            smtproutes.check(text)
        except smtproutes.RouteSyntaxError as exc:
            raise invalid(f"control/smtproutes {exc}") from None
    elif name in (identity.ME_FILE, identity.POSTMASTER_FILE):
        parse = identity.parse_me if name == identity.ME_FILE else identity.parse_postmaster
        try:
            parse(text)
        except ValueError as exc:
            raise invalid(str(exc)) from None
    elif name in POLICY_WORDS:
        values = control.lines(text)
        if len(values) != 1 or values[0].lower() not in POLICY_WORDS[name]:
            raise invalid(f"control/{name} must be one of {', '.join(POLICY_WORDS[name])}, "
                          f"got {text.strip()[:40]!r}")
    elif name == "rspamd":
        values = control.lines(text)
        if len(values) != 1 or not re.fullmatch(r"https?://[A-Za-z0-9.\[\]:_-]+/?", values[0]):
            raise invalid(f"control/rspamd must be one URL like http://127.0.0.1:11333, "
                          f"got {text.strip()[:60]!r}")
    elif name == "greylistexempt":
        for line in control.lines(text):
            try:
                ipaddress.ip_network(line.split()[0], strict=False)
            except ValueError:
                raise invalid(f"control/greylistexempt: not a network: {line[:60]!r}") from None
    elif name in (control.DEFAULT_DOMAIN_FILE, control.SRS_DOMAIN_FILE):
        values = control.lines(text)
        if len(values) != 1 or "@" in values[0]:
            raise invalid(f"control/{name} must be one domain name, got {text.strip()[:60]!r}")
        try:
            domain(values[0])
        except Refused as exc:
            raise invalid(f"control/{name}: {exc.message}") from None
    elif name == "rcpthosts":
        for line in control.lines(text):
            # rcpthosts may hold ".example.com" (every subdomain), as in qmail
            domain(line[1:] if name == "rcpthosts" and line.startswith(".") else line)
    return text
