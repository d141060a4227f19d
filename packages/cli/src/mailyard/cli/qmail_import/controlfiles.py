"""qmail's control/ files as Mailyard control files, routes and rcpthosts.

| qmail file                          | becomes                                                 |
|-------------------------------------|---------------------------------------------------------|
| me                                  | control me                                              |
| rcpthosts, morercpthosts            | control rcpthosts (only names that are not imported     |
|                                     | domains: those are accepted anyway)                     |
| locals                              | reported: mail to system users has no equivalent        |
| badmailfrom                         | control badmailfrom (merged with what is there)         |
| databytes, queuelifetime,           | control files of the same name (0 = qmail's "no limit"  |
| concurrencyremote, concurrencylocal | is reported: Mailyard keeps its default instead)        |
| smtproutes                          | routes (merged by domain, like `mailyard route set`)    |
| ~vpopmail/etc/defaultdomain         | control defaultdomain (vpopmail's domain for logins     |
|                                     | without one; qmail's own control/defaultdomain is       |
|                                     | qmail-inject's host-name completion, not read)          |
| ~vpopmail/domains/.quotawarn.msg    | control quotawarn.msg (vdelivermail's quota warning     |
| ~vpopmail/domains/DOM/.quotawarn.msg| text) and quotawarn.msg.DOM (the domain's, before it)   |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mailyard.cli.qmail_import import names
from mailyard.cli.qmail_import.problems import Problems
from mailyard.core import identity, smtproutes

INTEGER_FILES = ("databytes", "queuelifetime", "concurrencyremote", "concurrencylocal")
READ = ("me", "rcpthosts", "morercpthosts", "locals", "badmailfrom", "smtproutes",
        *INTEGER_FILES)


@dataclass
class ControlImport:
    me: str = ""
    rcpthosts: list[str] = field(default_factory=list)       # as qmail has them, deduplicated
    badmailfrom: list[str] = field(default_factory=list)
    integers: dict[str, int] = field(default_factory=dict)
    routes: list[str] = field(default_factory=list)          # smtproutes lines (key:host)
    default_domain: str = ""                                 # vpopmail's, as an A-label
    # quota warning texts: control name (quotawarn.msg[.domain]) -> (lines, source path)
    quotawarn: dict[str, tuple[list[str], str]] = field(default_factory=dict)


def _meaningful(lines: list[str]) -> list[tuple[int, str]]:
    return [(n, line.strip()) for n, line in enumerate(lines, 1)
            if line.strip() and not line.strip().startswith("#")]


def parse(files: dict[str, list[str]], control_dir: Path, problems: Problems
          ) -> ControlImport:
    """files: name -> lines, for each control file that exists."""
    out = ControlImport()
    for number, line in _meaningful(files.get("me", []))[:1]:
        # the Control service's own test: qmail took "localhost.localdomain" or "mx1" too
        problem = identity.hostname_problem(line)
        if problem:
            problems.unsupported(control_dir / "me", number, f"{problem}: Mailyard keeps "
                                 "its own (set it with `mailyard control set me`)")
        else:
            out.me = identity.parse_me(line)
    for name in ("rcpthosts", "morercpthosts"):
        for number, line in _meaningful(files.get(name, [])):
            host = line.lower().rstrip(".")
            try:
                names.domain(host[1:] if host.startswith(".") else host)
            except ValueError as exc:
                problems.error(control_dir / name, number, str(exc))
                continue
            out.rcpthosts.append(host)
    # deduplicated once, the first kept: a lookup in the list per line was quadratic
    out.rcpthosts = list(dict.fromkeys(out.rcpthosts))
    for number, line in _meaningful(files.get("locals", [])):
        problems.unsupported(control_dir / "locals", number,
                             f"{line}: delivery to system users has no equivalent (add the "
                             "domain and its users with `mailyard domain add`)")
    for number, line in _meaningful(files.get("badmailfrom", [])):
        if any(c.isspace() for c in line):
            problems.error(control_dir / "badmailfrom", number, "blank inside an entry")
        else:
            out.badmailfrom.append(line)
    out.badmailfrom = list(dict.fromkeys(out.badmailfrom))
    for name in INTEGER_FILES:
        values = _meaningful(files.get(name, []))
        if not values:
            continue
        number, value = values[0]
        if not (value.isascii() and value.isdigit()) or len(value) > 18:  # not "¹"
            problems.error(control_dir / name, number, f"{value!r} is not a number")
        elif int(value) == 0:
            problems.unsupported(control_dir / name, number, "0 (qmail: no limit): Mailyard "
                                 "needs a positive value and keeps its default")
        else:
            out.integers[name] = int(value)
    for number, line in _meaningful(files.get("smtproutes", [])):
        try:
            smtproutes.parse_line(line)
        except smtproutes.RouteSyntaxError as exc:
            problems.error(control_dir / "smtproutes", number, str(exc))
            continue
        out.routes.append(line)
    return out



def default_domain(lines: list[str], path: Path, problems: Problems) -> str:
    """vpopmail's default domain (its first line, as vpopmail read it), or "" with the
    problem reported."""
    for number, line in _meaningful(lines)[:1]:
        try:
            return names.domain(line)
        except ValueError as exc:
            problems.error(path, number, f"{exc}: logins without a domain stay refused")
    return ""


QUOTAWARN_FILE = ".quotawarn.msg"
# a control file is one KV message (nats-server's max_payload, 1 MiB); a warning is a page
QUOTAWARN_MAX = 512 * 1024


def quotawarn(lines: list[str] | None, path: Path, domain: str | None,
              out: ControlImport, problems: Problems) -> None:
    """vpopmail's quota warning text (the global one when `domain` is None) as the control
    file local-delivery reads; an empty file, which vdelivermail skipped, brings nothing."""
    if not lines or not any(line.strip() for line in lines):
        return
    for number, line in enumerate(lines, 1):
        if "\x00" in line:
            problems.error(path, number, "a NUL byte: not a text; not imported")
            return
    if sum(len(line.encode()) + 1 for line in lines) > QUOTAWARN_MAX:
        problems.error(path, 0, f"larger than {QUOTAWARN_MAX} bytes: not imported")
        return
    name = "quotawarn.msg" if domain is None else f"quotawarn.msg.{names.domain(domain)}"
    out.quotawarn[name] = (lines, str(path))
