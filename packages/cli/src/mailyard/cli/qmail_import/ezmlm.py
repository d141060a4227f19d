"""ezmlm lists (ezmlm / ezmlm-idx, as ezmlm-make sets them up for a vpopmail domain).

`.qmail-news` runs `ezmlm-send DIR` (after `ezmlm-reject`, maybe `ezmlm-issubn`): that
address is the list, DIR its directory (the old host's path). What comes over:

    DIR/subscribers/*          members: ezmlm's hashed files, each entry "T" address NUL
    DIR/digest/subscribers/*   digest members: members (Mailyard sends no digests)
    DIR/allow/subscribers/*    may post to a subscriber-only list: posters
    DIR/mod/subscribers/*      moderators: posters of a moderated list
    DIR/owner                  .qmail lines for LIST-owner: its address is the owner
    DIR/subonly, ezmlm-issubn  (in DIR/editor or the .qmail) subscriber-only: "members"
    DIR/modpost, ezmlm-store   moderated: not supported; "announce" with the moderators
                               as posters, so nothing unmoderated reaches the members
    DIR/public + ezmlm-manage  (ezmlm-make -p, the default, and .qmail-LIST-default running
                               ezmlm-manage) subscription by mail with confirmation: the
                               list's subscription "confirm"; without DIR/public (-P,
                               private), with DIR/modsub (-s, a moderator approves each
                               subscription: not supported) or without ezmlm-manage it is
                               "closed" and the owner edits the members

The list's other .qmail-news-* files (ezmlm-manage's -default, ezmlm-return's
-return-default, ...) run ezmlm programs that the list's command addresses replace.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.cli.qmail_import import dotqmail, names
from mailyard.cli.qmail_import.problems import Problems
from mailyard.cli.qmail_import.sourcefile import Unreadable, decode, read_bytes, read_lines

SUBSCRIBER = b"T"   # ezmlm-idx's entry type for an address ("T" + address + NUL)
_MODERATION = ("ezmlm-store", "ezmlm-gate", "ezmlm-moderate", "ezmlm-clean")


def is_ezmlm(program: dotqmail.Program) -> bool:
    return program.name.startswith("ezmlm-")


def list_dir(dot: dotqmail.DotQmail, home: str) -> str | None:
    """The old host's list directory of a .qmail that runs ezmlm-send, else None."""
    for program in dot.programs:
        if program.name == "ezmlm-send":
            args = [w for w in program.words[1:] if not w.startswith("-")]
            if args:
                return posixpath.normpath(posixpath.join(home, args[0]))
    return None


@dataclass
class Ezmlm:
    members: list[str] = field(default_factory=list)
    posters: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)      # DIR/owner's forwards
    posting: pb.PostingPolicy.ValueType = pb.POSTING_POLICY_OPEN
    moderated: bool = False
    subscription: pb.SubscriptionPolicy.ValueType = pb.SUBSCRIPTION_POLICY_UNSPECIFIED
    moderated_subscription: bool = False  # DIR/modsub: comes over closed


def subscription(directory: Path, manage: bool, out: Ezmlm) -> None:
    """`manage`: the list's -default address runs ezmlm-manage (it answers commands)."""
    if (directory / "modsub").exists():
        out.moderated_subscription = True
    elif manage and (directory / "public").exists():
        out.subscription = pb.SUBSCRIPTION_POLICY_CONFIRM


def read(directory: Path, dot: dotqmail.DotQmail, home: str, problems: Problems) -> Ezmlm:
    """The list whose directory (in the copy) is `directory`; `dot` is its .qmail."""
    out = Ezmlm()
    out.members = subscribers(directory / "subscribers", problems)
    digest = subscribers(directory / "digest" / "subscribers", problems)
    if digest:
        problems.unsupported(directory / "digest", 0, f"{len(digest)} digest subscriber(s): "
                             "Mailyard sends no digests; they get every message")
        out.members += [m for m in digest if m not in out.members]
    editor = _programs(directory / "editor", home, problems)
    names_run = {p.name for p in [*dot.programs, *editor]}
    if (directory / "modpost").exists() or names_run.intersection(_MODERATION):
        out.moderated = True
        out.posting = pb.POSTING_POLICY_ANNOUNCE
        out.posters = subscribers(directory / "mod" / "subscribers", problems)
    elif (directory / "subonly").exists() or "ezmlm-issubn" in names_run:
        out.posting = pb.POSTING_POLICY_MEMBERS
        out.posters = subscribers(directory / "allow" / "subscribers", problems)
    owner = _read_lines(directory / "owner", problems)
    if owner:
        parsed = dotqmail.parse(owner, directory / "owner", home, problems)
        for address, number in parsed.forwards:
            try:
                out.owners.append(names.target(address))
            except ValueError as exc:
                problems.error(directory / "owner", number, str(exc))
    return out


def subscribers(folder: Path, problems: Problems) -> list[str]:
    """The addresses in ezmlm's hashed subscriber files of `folder` (none: no folder)."""
    out: dict[str, None] = {}
    try:
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return []
    except OSError as exc:
        problems.error(folder, 0, f"cannot list the subscribers: {exc.strerror}")
        return []
    for path in files:
        try:
            raw = read_bytes(path)
        except Unreadable as exc:
            problems.error(path, 0, str(exc))
            continue
        for number, entry in enumerate((raw or b"").split(b"\0"), 1):
            if not entry:
                continue
            text = decode(entry[1:])
            if entry[:1] != SUBSCRIBER:
                problems.error(path, number, f"entry {number} {decode(entry[:60])!r} is not "
                               "an ezmlm address entry (\"T\" address NUL)")
                continue
            try:
                out[names.target(text)] = None
            except ValueError as exc:
                problems.error(path, number, f"entry {number}: {exc}")
    return list(out)


def _read_lines(path: Path, problems: Problems) -> list[str] | None:
    try:
        return read_lines(path)
    except Unreadable as exc:
        problems.error(path, 0, str(exc))
        return None


def _programs(path: Path, home: str, problems: Problems) -> list[dotqmail.Program]:
    lines = _read_lines(path, problems)
    return dotqmail.parse(lines, path, home, problems).programs if lines else []
