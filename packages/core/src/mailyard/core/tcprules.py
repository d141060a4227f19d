"""tcp.smtp: tcprules text parsed as written, and the lookup tcpserver does per connection.

Accepted lines (blank lines and # comments are skipped):

    127.0.0.:allow,RELAYCLIENT=""          prefix on an octet boundary
    1.2.3.4:deny                           one address
    10.0.0.1-50:allow,RELAYCLIENT=""       range in the last octet (tcprules expands it)
    10.2-3.:allow                          range in a prefix's last octet
    10.0.0.0/8:allow,RELAYCLIENT=""        CIDR (IPv4 or IPv6)
    ::1:allow,RELAYCLIENT=""               IPv6 address (also [::1])
    :allow                                 anything
    213.41.188.249:allow,RELAYCLIENT=" ",RBLSMTPD=" " 1029581749

Text after the instructions, separated by whitespace (open-smtp's timestamps), is ignored.
Variables are VAR="value" (tcprules' quote may be " or '); an unquoted VAR=value runs to the
next comma or blank.

Lookup is tcpserver's: the most specific match wins (an address before 1.2.3. before 1.2.
before the catch-all); among rules for the same addresses the first line wins, as in the cdb
tcprules builds. Every pattern becomes networks, indexed by prefix length, so a check costs
one dict lookup per distinct prefix length whatever the number of lines (open-smtp files
on the help page reached 11,859 lines).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from mailyard.core.control import version_of

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_ACTION = re.compile(r":(allow|deny)(?=$|[,\s])")
_VAR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_MAX_RANGE_EXPANSION = 256
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # IPv4-mapped IPv6 addresses


class RuleError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(eq=False)
class Rule:
    pattern: str                     # the address part as written ("" = any)
    allow: bool
    env: dict[str, str] = field(default_factory=dict)
    line: int = 0
    networks: list[IPNetwork] = field(default_factory=list, repr=False)


def parse_ip(text: str) -> IPAddress:
    """A client address; IPv4-mapped IPv6 is treated as the IPv4 address it carries, and an
    IPv6 zone is dropped: the socket API names a link-local peer 'fe80::1%eth0', where the
    zone is our interface, not the client (tcpserver's TCPREMOTEIP has none), and ipaddress
    cannot even write a scoped address out in full (exploded raises)."""
    ip = ipaddress.ip_address(text.strip().strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.scope_id is not None:
            return ipaddress.IPv6Address(int(ip))
    return ip


def _ipv4_networks(addr: str) -> list[IPNetwork]:
    is_prefix = addr.endswith(".")
    parts = addr[:-1].split(".") if is_prefix else addr.split(".")
    if not is_prefix and len(parts) != 4:
        raise ValueError(f"incomplete address {addr!r} (a prefix ends with a dot: 1.2.3.)")
    if len(parts) > 3 and is_prefix:
        raise ValueError(f"prefix {addr!r} has too many octets")
    if any("-" in p for p in parts[:-1]):
        raise ValueError("a range is allowed only in the last octet")
    first, _, last = parts[-1].partition("-")
    values = [first, last or first]
    for p in [*parts[:-1], *values]:
        if not (p.isascii() and p.isdigit()) or int(p) > 255:
            raise ValueError(f"bad octet {p!r}")
    lo, hi = int(values[0]), int(values[1])
    if lo > hi:
        raise ValueError(f"empty range {parts[-1]!r}")
    bits = 8 * len(parts)
    pad = ".0" * (4 - len(parts))
    head = ".".join(parts[:-1]) + ("." if len(parts) > 1 else "")
    return [ipaddress.IPv4Network(f"{head}{v}{pad}/{bits}") for v in range(lo, hi + 1)]


def networks_of(addr: str) -> list[IPNetwork]:
    """The networks one tcprules address pattern stands for."""
    if addr == "":
        return [ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv6Network("::/0")]
    if addr.startswith("="):
        raise ValueError("host name rules (=host) are not supported; use addresses")
    addr = addr.strip("[]")
    if "/" in addr:
        try:
            net = ipaddress.ip_network(addr, strict=True)
        except ValueError as exc:
            raise ValueError(f"bad network {addr!r}: {exc}") from None
        if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
            # clients are looked up as the IPv4 address a mapped one carries (parse_ip)
            return [ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF,
                                           net.prefixlen - 96))]
        return [net]
    if ":" in addr:
        ip = parse_ip(addr)
        return [ipaddress.ip_network(ip)]
    return _ipv4_networks(addr)


def _parse_env(rest: str, lineno: int) -> dict[str, str]:
    env: dict[str, str] = {}
    pos = 0
    while pos < len(rest) and rest[pos] == ",":
        m = _VAR.match(rest, pos + 1)
        if not m:
            raise RuleError(lineno, f"expected VAR=\"value\" at {rest[pos + 1:]!r}")
        pos = m.end()
        quote = rest[pos:pos + 1]
        if quote in ('"', "'"):
            end = rest.find(quote, pos + 1)
            if end < 0:
                raise RuleError(lineno, f"unterminated value of {m.group(1)}")
            value, pos = rest[pos + 1:end], end + 1
        else:
            end = pos
            while end < len(rest) and rest[end] != "," and not rest[end].isspace():
                end += 1
            value, pos = rest[pos:end], end
        env[m.group(1)] = value
    if pos < len(rest) and not rest[pos].isspace():
        raise RuleError(lineno, f"unexpected text {rest[pos:]!r} (instructions are ,VAR=\"x\")")
    return env  # anything after whitespace is a comment (open-smtp's timestamps)


def parse_line(raw: str, lineno: int = 0) -> Rule | None:
    line = raw.strip()
    if not line or line.startswith("#"):
        return None
    m = _ACTION.search(line)
    if not m:
        raise RuleError(lineno, f"expected ADDRESS:allow or ADDRESS:deny in {line!r}")
    pattern = line[:m.start()].strip()
    try:
        nets = networks_of(pattern)
    except ValueError as exc:
        raise RuleError(lineno, str(exc)) from None
    if len(nets) > _MAX_RANGE_EXPANSION:
        raise RuleError(lineno, "range too large")
    env = _parse_env(line[m.end():], lineno)
    return Rule(pattern=pattern, allow=m.group(1) == "allow", env=env, line=lineno,
                networks=nets)


def parse(text: str) -> list[Rule]:
    """Every rule of a tcp.smtp text, or RuleError naming the first bad line."""
    rules = []
    # Lines end at LF (CRLF tolerated), as tcprules reads them: str.splitlines() also breaks
    # at \x1c-\x1e, \x85 and U+2028, numbering lines the operator cannot see (found by the
    # property test).
    for lineno, raw in enumerate(text.split("\n"), 1):
        rule = parse_line(raw.removesuffix("\r"), lineno)
        if rule is not None:
            rules.append(rule)
    return rules


class RuleSet:
    """A parsed tcp.smtp, indexed for tcpserver's most-specific-match lookup."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.version = version_of(text)
        self.rules = parse(text)
        # {ip version: {prefix length: {network address >> host bits: rule}}}
        self._index: dict[int, dict[int, dict[int, Rule]]] = {4: {}, 6: {}}
        for rule in self.rules:
            for net in rule.networks:
                host_bits = net.max_prefixlen - net.prefixlen
                table = self._index[net.version].setdefault(net.prefixlen, {})
                table.setdefault(int(net.network_address) >> host_bits, rule)  # first wins
        self._lengths = {v: sorted(t, reverse=True) for v, t in self._index.items()}

    def match(self, ip: IPAddress) -> Rule | None:
        value = int(ip)
        bits = ip.max_prefixlen
        index = self._index[ip.version]
        for length in self._lengths[ip.version]:
            rule = index[length].get(value >> (bits - length))
            if rule is not None:
                return rule
        return None
