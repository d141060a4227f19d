"""A list's command addresses: news-subscribe@, news-owner@ ... (ezmlm's LIST-default,
Mailman's -request), the list's address with an extension and no record of its own.

They are never posted: with qmail's "-" delimiter news-subscribe@ would otherwise reach
news@ as an extension and go to every member. -owner and -request (RFC 2142's habit) reach
the owner; -return (ezmlm's LIST-return-, with its VERP forms LIST-return-NNN-user=host),
the envelope sender of what the list writes itself, takes whatever comes back and drops
it; the others are refused, naming the owner's address.
"""

from __future__ import annotations

from mailyard.core.addresses import split

OWNER_EXTENSIONS = frozenset({"owner", "request"})
RETURN_EXTENSION = "return"


def is_return(extension: str) -> bool:
    """-return, and ezmlm's VERP forms of it: LIST-return-NNN-user=host@ (a member's bounce
    of message NNN) and LIST-return-NNN-@. Lists moved from ezmlm keep receiving those for
    what they sent before the move; refused at RCPT, each bounce of a bounce came back to
    the member's own postmaster. Taken and dropped like -return."""
    if not extension.startswith(RETURN_EXTENSION):
        return False
    rest = extension[len(RETURN_EXTENSION):]
    return rest == "" or rest[0] in "-+"


def extension(address: str, list_address: str) -> str:
    """news-subscribe@ of news@: "subscribe" (both canonical, the list's local part a prefix
    of the address's followed by a delimiter)."""
    return split(address)[0][len(split(list_address)[0]) + 1:]


def owner_address(address: str, list_address: str) -> str:
    """The -owner address in the form this one was written: same delimiter, same domain (an
    alias domain's name stays)."""
    local, domain = split(address)
    list_local = split(list_address)[0]
    return f"{list_local}{local[len(list_local)]}owner@{domain}"


def command(list_address: str, delimiter: str, extension: str) -> str:
    """The list's address with `extension` after `delimiter`: LIST+owner@, LIST+return@,
    LIST+subscribe@, a confirmation's LIST+sc.COOKIE-user=host@."""
    local, domain = split(list_address)
    return f"{local}{delimiter}{extension}@{domain}"


def owner_command(list_address: str, delimiters: str, owner: str) -> str:
    """Where a list's fields send people who want the owner: LIST-owner@ with the first
    delimiter in use, or the owner's own address while extensions are off."""
    if not delimiters:
        return owner
    return command(list_address, delimiters[0], "owner")


def return_address(list_address: str, delimiter: str) -> str:
    """LIST+return@: the envelope sender of a list's confirmation requests, welcomes and
    goodbyes, so their bounces come back to the list (and a BATV-checking receiver, which
    refuses <> to an address that sent nothing, takes them)."""
    return command(list_address, delimiter, RETURN_EXTENSION)
