"""control/smtproutes: qmail's syntax, read live on every delivery, plus per-route options.

    example.com:relay.example.net        exact domain
    .example.com:relay.example.net:2525  every subdomain of example.com (not example.com)
    :smarthost.example.net:587 tls=must auth=mailer:/run/secrets/smarthost
    example.org:                          empty host: use the MX records (an exception to a
                                          default route, as in qmail)

Lookup order is qmail-remote's: the whole domain, then each parent suffix starting with a
dot (".b.example.com", ".example.com", ".com"), then the default ":"; the first key found
wins, whatever the line order. Options after whitespace are ours:

    tls=none|may|must|verify   STARTTLS policy for this route (default: MAILYARD_REMOTE_TLS_POLICY)
    auth=USER:PASSWORDFILE     AUTH to a smarthost; the password is read from that file at
                               delivery time, never written into the control file
A host in brackets ([192.0.2.1]) or a plain name is resolved with A/AAAA, never MX.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mailyard.core.control import lines as control_lines
from mailyard.remote_delivery.settings import TLS_POLICIES

log = logging.getLogger(__name__)


class RouteSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Route:
    key: str                 # "example.com", ".example.com" or "" (default)
    host: str                # "" = use MX
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


def parse_line(line: str) -> Route:
    head, *options = line.split()
    key, sep, rest = head.partition(":")
    if not sep:
        raise RouteSyntaxError(f"no ':' in {line!r}")
    key = key.strip().lower().rstrip(".")
    if rest.startswith("["):  # [address] or [v6]:port
        inner, _, after = rest[1:].partition("]")
        host = inner
        port_text = after[1:] if after.startswith(":") else ""
        if after and not after.startswith(":"):
            raise RouteSyntaxError(f"bad host in {line!r}")
    else:
        host, _, port_text = rest.partition(":")
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise RouteSyntaxError(f"bad port in {line!r}")
        port = int(port_text)
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
    if host.endswith("."):
        host = host[:-1]
    return Route(key=key, host=host.lower(), port=port, tls=tls, auth_user=user,
                 auth_password_file=password_file, line=line)


def parse(text: str) -> dict[str, Route]:
    """Every valid line by key; a bad line is logged and skipped (the rest still route)."""
    routes: dict[str, Route] = {}
    for line in control_lines(text):
        try:
            route = parse_line(line)
        except RouteSyntaxError as exc:
            log.warning("smtproutes: skipping line: %s", exc)
            continue
        routes.setdefault(route.key, route)  # first line for a key wins, as in qmail's cdb
    return routes


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


def format_line(domain: str, host: str, port: int | None = None, options: str = "") -> str:
    """One smtproutes line (used by `mailyard route set`)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    line = f"{domain}:{host}" + (f":{port}" if port else "")
    return f"{line} {options}".strip()
