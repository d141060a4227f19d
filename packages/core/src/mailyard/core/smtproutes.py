"""control/smtproutes: the one grammar every writer (`mailyard route`, `mailyard control set`,
the directory's Control service) and the reader (remote-delivery) use.

    example.com:relay.example.net        exact domain
    .example.com:relay.example.net:2525  every subdomain of example.com (not example.com)
    :smarthost.example.net:587 tls=must auth=mailer:/run/secrets/smarthost
    example.org:                          empty host: use the MX records (an exception to a
                                          default route, as in qmail)
    lit.example:[192.0.2.1]:2525          an address in brackets (IPv6 too: [2001:db8::1])

Lookup order is qmail-remote's: the whole domain, then each parent suffix starting with a
dot (".b.example.com", ".example.com", ".com"), then the default ":"; the first key found
wins, whatever the line order. Options after whitespace are ours:

    tls=none|may|must|verify   STARTTLS policy for this route (default: MAILYARD_REMOTE_TLS_POLICY)
    auth=USER:PASSWORDFILE     AUTH to a smarthost; the password is read from that file at
                               delivery time, never written into the control file
A host in brackets or a plain name is resolved with A/AAAA, never MX.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from mailyard.core.control import lines as control_lines

log = logging.getLogger(__name__)

TLS_POLICIES = ("none", "may", "must", "verify")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")


class RouteSyntaxError(ValueError):
    """A line remote-delivery cannot use; writers refuse it, the reader skips it."""


@dataclass(frozen=True)
class Route:
    key: str                 # "example.com", ".example.com" or "" (default)
    host: str                # "" = use MX; an IP address without brackets
    port: int | None = None  # None = settings.smtp_port
    tls: str | None = None   # None = settings.tls_policy
    auth_user: str = ""
    auth_password_file: str = ""
    line: str = ""

    @property
    def uses_mx(self) -> bool:
        return not self.host

    def password(self) -> str:
        """The smarthost password, read now (rotated secrets apply on the next delivery)."""
        return Path(self.auth_password_file).read_text().strip()


def parse_key(text: str) -> str:
    """"" (the default route), "example.com" or ".example.com" (every subdomain), lowered."""
    key = text.strip().lower().rstrip(".")
    name = key[1:] if key.startswith(".") else key
    if key and not _NAME.match(name):
        raise RouteSyntaxError(f"not a domain: {text!r}")
    return key


def parse_host(text: str) -> tuple[str, int | None]:
    """"" (use MX), HOST, HOST:PORT, [ADDRESS] or [ADDRESS]:PORT."""
    if text.startswith("["):
        inner, closed, after = text[1:].partition("]")
        if not closed:
            raise RouteSyntaxError(f"missing ']' in {text!r}")
        try:
            host = str(ipaddress.ip_address(inner))
        except ValueError:
            raise RouteSyntaxError(f"not an IP address in brackets: {inner!r}") from None
        if after and not after.startswith(":"):
            raise RouteSyntaxError(f"unexpected {after!r} after ']'")
        port_text, has_port = after[1:], bool(after)
    else:
        host, has_port_sep, port_text = text.partition(":")
        has_port = bool(has_port_sep)
        host = host.lower().rstrip(".")
        if host and not _NAME.match(host):
            raise RouteSyntaxError(f"not a host name: {host!r}")
    if not has_port:
        return host, None
    if not host:
        raise RouteSyntaxError(f"a port without a host in {text!r}")
    if not port_text:
        raise RouteSyntaxError(f"empty port in {text!r}")
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise RouteSyntaxError(f"not a port (1-65535): {port_text!r}")
    return host, int(port_text)


def parse_line(line: str) -> Route:
    """One meaningful line, or RouteSyntaxError saying what is wrong with it."""
    head, *options = line.split()
    key_text, sep, rest = head.partition(":")
    if not sep:
        raise RouteSyntaxError(f"no ':' in {line!r}")
    key = parse_key(key_text)
    host, port = parse_host(rest)
    tls: str | None = None
    user = password_file = ""
    for option in options:
        name, _, value = option.partition("=")
        if name == "tls":
            if value not in TLS_POLICIES:
                raise RouteSyntaxError(f"tls= must be one of {', '.join(TLS_POLICIES)}")
            tls = value
        elif name == "auth":
            user, _, password_file = value.partition(":")
            if not user or not password_file.startswith("/"):
                raise RouteSyntaxError("auth= must be USER:/absolute/path/to/passwordfile")
        else:
            raise RouteSyntaxError(f"unknown option {name!r} in {line!r}")
    return Route(key=key, host=host, port=port, tls=tls, auth_user=user,
                 auth_password_file=password_file, line=line.strip())


def check(text: str) -> None:
    """Writers: RouteSyntaxError naming the first bad line of a whole file."""
    for number, raw in enumerate(text.splitlines(), 1):
        if control_lines(raw):
            try:
                parse_line(raw)
            except RouteSyntaxError as exc:
                raise RouteSyntaxError(f"line {number}: {exc}") from None


def parse(text: str) -> dict[str, Route]:
    """Every valid line by key; a bad line (only an old stored file can have one) is logged
    and skipped, so the rest still route."""
    routes: dict[str, Route] = {}
    for line in control_lines(text):
        try:
            route = parse_line(line)
        except RouteSyntaxError as exc:
            log.warning("smtproutes: skipping line: %s", exc)
            continue
        routes.setdefault(route.key, route)  # first line for a key wins, as in qmail's cdb
    return routes


def line_key(line: str) -> str | None:
    """The key of a stored line (None for a line that does not parse)."""
    try:
        return parse_line(line).key
    except RouteSyntaxError:
        return None


def choose(routes: dict[str, Route], domain: str) -> Route | None:
    """The route for a domain, or None when no line matches (use MX)."""
    domain = domain.lower().rstrip(".")
    if domain in routes:
        return routes[domain]
    for i, char in enumerate(domain):
        if char == ".":
            found = routes.get(domain[i:])
            if found is not None:
                return found
    return routes.get("")


def format_line(key: str, host: str, port: int | None = None, tls: str | None = None,
                auth_user: str = "", auth_password_file: str = "") -> str:
    """One smtproutes line; parse_line() reads it back to the same Route fields."""
    if ":" in host:
        host = f"[{host}]"  # IPv6: its colons would read as a port
    line = f"{key}:{host}" + (f":{port}" if port else "")
    if tls:
        line += f" tls={tls}"
    if auth_user:
        line += f" auth={auth_user}:{auth_password_file}"
    return line
