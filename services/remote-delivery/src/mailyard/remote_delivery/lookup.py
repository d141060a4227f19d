"""Where mail for a domain goes: smtproutes first, else MX (dnspython's async resolver).

The result is a Plan: the hops in the order they will be tried, or why there are none
(permanent: a null MX, no such domain, an MX loop back to us; temporary: DNS trouble).
qmail-remote's texts are kept because operators grep for them.
"""

from __future__ import annotations

import ipaddress
import math
import random
from dataclasses import dataclass, field, replace

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from mailyard.core.identity import Identity
from mailyard.core.smtproutes import Route
from mailyard.remote_delivery.settings import Settings, parse_server

TEMP_DNS = "Sorry, I couldn't find any host by that name. (#4.1.2)"
NO_MX = "Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)"
NULL_MX = "Sorry, {domain} does not accept mail: it publishes a null MX (RFC 7505). (#5.1.10)"
NO_HOST = "Sorry, I couldn't find any host named {domain}. (#5.1.2)"
LOOP = ("Sorry. Although I'm listed as a best-preference MX or A for that host, it isn't in "
        "my control/locals file, so I don't treat it as local: mail for {domain} loops back "
        "to myself. (#5.4.6)")


@dataclass
class Hop:
    host: str
    preference: int
    addresses: list[str]
    port: int


@dataclass
class Plan:
    domain: str
    source: str                      # smtproutes, mx, implicit-mx, null-mx
    hops: list[Hop] = field(default_factory=list)
    route: Route | None = None
    error: str = ""
    permanent: bool = False
    # Wall-clock time (time.time()) when the DNS answers behind this plan expire: the
    # smallest TTL of them; inf when no DNS was asked (an address in smtproutes).
    expires: float = math.inf

    @property
    def ok(self) -> bool:
        return bool(self.hops) and not self.error

    @property
    def has_ties(self) -> bool:
        prefs = [h.preference for h in self.hops]
        return len(set(prefs)) != len(prefs)

    def reshuffled(self) -> Plan:
        """The same plan with equal-preference hops in a new random order (a plan reused
        from the cache still spreads load over equal MX, RFC 5321 5.1)."""
        if not self.has_ties:
            return self
        hops = sorted(random.sample(self.hops, len(self.hops)), key=lambda h: h.preference)
        return replace(self, hops=hops)


class DnsTemporary(Exception):
    pass


class DnsNotFound(Exception):
    pass


def make_resolver(settings: Settings) -> dns.asyncresolver.Resolver:
    if not settings.dns_server:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        host, port = parse_server(settings.dns_server)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = settings.dns_timeout
    resolver.timeout = min(settings.dns_timeout, 3.0)
    resolver.cache = dns.resolver.LRUCache(4096)  # honours TTLs; MX hosts repeat a lot
    return resolver


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class Lookup:
    def __init__(self, settings: Settings, identity: Identity,
                 resolver: dns.asyncresolver.Resolver | None = None) -> None:
        self.settings = settings
        self.identity = identity
        self.resolver = resolver or make_resolver(settings)
        self.addresses = {str(ipaddress.ip_address(a)) for a in settings.local_addresses}

    async def _query(self, name: str, rdtype: str, plan: Plan | None = None) -> list[str]:
        """Rdata texts; [] when the name exists without that type. Raises DnsNotFound for
        NXDOMAIN, DnsTemporary for SERVFAIL / timeouts / no reachable server. The answer's
        expiry lowers plan.expires."""
        try:
            answer = await self.resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN as exc:
            raise DnsNotFound(name) from exc
        except dns.resolver.NoAnswer:
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout,
                dns.resolver.YXDOMAIN) as exc:
            raise DnsTemporary(f"{name}/{rdtype}: {exc}") from exc
        except dns.exception.DNSException as exc:
            raise DnsTemporary(f"{name}/{rdtype}: {exc}") from exc
        if plan is not None:
            plan.expires = min(plan.expires, answer.expiration)
        return [r.to_text() for r in answer]

    async def addresses_of(self, host: str, plan: Plan | None = None) -> list[str]:
        """A then AAAA. NXDOMAIN -> []; a temporary failure of both raises DnsTemporary."""
        if is_ip(host):
            return [host]
        found: list[str] = []
        temporary: DnsTemporary | None = None
        for rdtype in ("A", "AAAA"):
            try:
                found += await self._query(host, rdtype, plan)
            except DnsNotFound:
                return []
            except DnsTemporary as exc:
                temporary = exc
        if not found and temporary:
            raise temporary
        return found

    async def mx(self, domain: str, plan: Plan | None = None) -> list[tuple[int, str]]:
        """(preference, host) records; [] when there is no MX (implicit MX applies)."""
        records = []
        for text in await self._query(domain, "MX", plan):
            pref, _, host = text.partition(" ")
            records.append((int(pref), host.rstrip(".").lower()))
        return records

    async def plan(self, domain: str, route: Route | None) -> Plan:
        domain = domain.lower().rstrip(".")
        port = self.settings.smtp_port
        if route is not None and not route.uses_mx:
            plan = Plan(domain, "smtproutes", route=route)
            candidates = [(0, route.host)]
            port = route.port or port
        else:
            plan = Plan(domain, "mx", route=route)
            try:
                records = await self.mx(domain, plan)
            except DnsNotFound:
                return _fail(plan, NO_HOST.format(domain=domain), permanent=True)
            except DnsTemporary:
                return _fail(plan, TEMP_DNS, permanent=False)
            if len(records) == 1 and records[0][1] in ("", "."):
                plan.source = "null-mx"
                return _fail(plan, NULL_MX.format(domain=domain), permanent=True)
            records = [r for r in records if r[1] not in ("", ".")]
            if not records:
                plan.source = "implicit-mx"
                records = [(0, domain)]
            candidates = order(records)
        temporary = False
        for pref, host in candidates:
            try:
                addresses = await self.addresses_of(host, plan)
            except DnsTemporary:
                temporary = True
                continue
            if addresses:
                plan.hops.append(Hop(host, pref, addresses, port))
        if not plan.hops:
            return _fail(plan, TEMP_DNS if temporary else NO_MX, permanent=not temporary)
        if temporary:
            plan.expires = 0.0  # a host is missing for now: do not reuse this plan
        return self._drop_self(plan)

    def _drop_self(self, plan: Plan) -> Plan:
        """qmail's rule: if we are one of the MX, only better-preference hosts may take the
        mail; if none is better, the mail would loop back to us."""
        names = self.settings.our_names(self.identity.me)  # me is hot: read it now
        ours = [h.preference for h in plan.hops
                if h.host in names or self.addresses.intersection(h.addresses)]
        if not ours:
            return plan
        best = min(ours)
        plan.hops = [h for h in plan.hops if h.preference < best]
        if not plan.hops:
            return _fail(plan, LOOP.format(domain=plan.domain), permanent=True)
        return plan


def order(records: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """By preference; equal preferences shuffled so load spreads (RFC 5321 5.1)."""
    shuffled = list(records)
    random.shuffle(shuffled)
    return sorted(shuffled, key=lambda r: r[0])  # sort is stable: the shuffle survives ties


def _fail(plan: Plan, error: str, *, permanent: bool) -> Plan:
    plan.error = error
    plan.permanent = permanent
    plan.hops = []
    return plan
