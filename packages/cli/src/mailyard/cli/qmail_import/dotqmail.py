""".qmail files (dot-qmail(5)): what qmail-local does with a message, one line each.

    # comment
    &joe@example.com            forward (also a bare address: any other first character)
    ./joe/Maildir/              deliver to a Maildir (a path ending in "/")
    /home/vpopmail/domains/example.com/joe/Maildir/
    ./mbox                      append to an mbox file (a path not ending in "/")
    |/usr/bin/autorespond ...   run a program (ezmlm, autoresponders, maildrop, vdelivermail)

A file name maps to an address: `.qmail-info` is info@, `.qmail-first:last` is first.last@
(qmail writes "." as ":"), `.qmail-default` is everything else, `.qmail-list-default`
everything starting with "list-".
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from mailyard.cli.qmail_import.problems import Problems

PREFIX = ".qmail-"


@dataclass(frozen=True)
class Program:
    command: str
    line: int

    @property
    def words(self) -> list[str]:
        try:
            return shlex.split(self.command)
        except ValueError:
            return self.command.split()

    @property
    def name(self) -> str:
        words = self.words
        return posixpath.basename(words[0]) if words else ""

    def describe(self) -> str:
        """What the program is, for the report."""
        name = self.name
        if name.startswith("ezmlm"):
            return f"ezmlm mailing list ({name})"
        if "autorespond" in name or name in ("vacation", "qmail-autoresponder"):
            return f"autoresponder ({name})"
        if name in ("maildrop", "preline") or name.startswith("spamc"):
            return f"filter ({name})"
        return f"program ({name or self.command!r})"


@dataclass
class DotQmail:
    path: str                           # where it was read (for the report)
    forwards: list[tuple[str, int]] = field(default_factory=list)   # (address, line)
    maildirs: list[tuple[str, int]] = field(default_factory=list)   # (old-host path, line)
    mboxes: list[tuple[str, int]] = field(default_factory=list)
    programs: list[Program] = field(default_factory=list)


def local_of(filename: str) -> str | None:
    """The local part a .qmail-<ext> file serves ("default" included), None if not one."""
    if not filename.startswith(PREFIX) or len(filename) == len(PREFIX):
        return None
    return filename[len(PREFIX):].replace(":", ".").lower()


def parse(lines: list[str], path: Path | str, home: str, problems: Problems) -> DotQmail:
    """Parse a .qmail whose deliveries run in `home` (the old host's directory, for ./x)."""
    out = DotQmail(str(path))
    for number, raw in enumerate(lines, 1):
        # qmail-local strips trailing blanks only: what it did with the line is what the
        # old host's users got, and a line that never worked there must not start now
        line = raw.rstrip()
        if not line:
            if number == 1:
                problems.error(path, number, "the first line is blank: qmail-local deferred "
                               "every message to this address (\"Uh-oh: first line of .qmail "
                               "file is blank. (#4.2.1)\"); remove the blank line")
            continue
        if line[0] in " \t":
            problems.error(path, number, f"the line starts with a blank: qmail-local read it "
                           f"as a forward to {line!r}, an address no mail reached; remove "
                           "the blank to make it what it was meant to be")
            continue
        if line.startswith("#"):
            continue
        if "\x00" in line:
            problems.error(path, number, "NUL byte in the line")
            continue
        first = line[0]
        if first == "|":
            out.programs.append(Program(line[1:].strip(), number))
        elif first in "./":
            resolved = posixpath.normpath(posixpath.join(home, line))
            if line.endswith("/"):
                out.maildirs.append((resolved, number))
            else:
                out.mboxes.append((resolved, number))
        else:   # qmail-local forwards any other line; "&" lets it start with #, ., / or |
            address = line[1:].strip() if first == "&" else line
            if "@" not in address or address.startswith("@") or address.endswith("@"):
                problems.error(path, number, f"forward {address!r} has no domain (qmail "
                               "would add control/defaulthost; write the full address)")
                continue
            out.forwards.append((address, number))
    return out


@dataclass(frozen=True)
class CatchAll:
    """What .qmail-default's vdelivermail line says about unknown users."""

    action: str          # "bounce", "delete", "address", "path"
    target: str = ""     # the address or old-host path
    line: int = 0


def catch_all(dot: DotQmail, home: str, problems: Problems) -> CatchAll | None:
    """The catch-all of a domain's .qmail-default, None when it is not vdelivermail's."""
    vdeliver = [p for p in dot.programs if p.name == "vdelivermail"]
    for other in dot.programs:
        if other.name != "vdelivermail":
            problems.unsupported(dot.path, other.line,
                                 f"{other.describe()} runs for every unknown user: not imported")
    for address, number in dot.forwards:
        problems.unsupported(dot.path, number, f"forward of every unknown user to {address}:"
                             " a catch-all in Mailyard delivers to one mailbox; not imported")
    if not vdeliver:
        return None
    program = vdeliver[0]
    words = program.words
    if len(words) != 3:
        problems.error(dot.path, program.line, "expected vdelivermail '' TARGET")
        return None
    target = words[2]
    if target == "bounce-no-mailbox":
        return CatchAll("bounce", line=program.line)
    if target == "delete":
        return CatchAll("delete", line=program.line)
    if target.startswith("/") or target.startswith("."):
        return CatchAll("path", posixpath.normpath(posixpath.join(home, target)),
                        program.line)
    if "@" in target:
        return CatchAll("address", target, program.line)
    problems.error(dot.path, program.line, f"vdelivermail target {target!r} is not "
                   "bounce-no-mailbox, delete, an address or a path")
    return None
