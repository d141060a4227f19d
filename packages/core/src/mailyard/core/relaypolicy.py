"""The relay decision (tcpserver's rules + POP-before-SMTP leases), one implementation for
relay-auth, which holds the rules and leases and answers CheckClient, and for smtp-ingress,
which decides from its own live view of the same KV data so that a connection needs no
round trip (and a paused or restarting relay-auth is invisible to known clients).

Inputs, all in JetStream KV: the tcp.smtp text in the "control" bucket (DEFAULT_RULES while
it is absent) and the leases in "relay_leases" (key lease_key(ip), value relayauth.v1.Lease).
"""

from __future__ import annotations

import functools
import logging

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core.control import ControlView
from mailyard.core.tcprules import IPAddress, RuleError, RuleSet, parse_ip

log = logging.getLogger(__name__)

RULES_FILE = "tcp.smtp"
# qmail's out-of-the-box rule set: relay for loopback only, everybody else may connect and
# deliver to local domains. Used while the "control" bucket holds no "tcp.smtp".
DEFAULT_RULES = '127.:allow,RELAYCLIENT=""\n:allow\n'
# a lease's own TTL at most, seconds (relay-auth's GrantLease and HTTP API, the CLI's
# --ttl): a lease is for days, not for ever
MAX_LEASE_TTL = 366 * 86400


def lease_key(ip: IPAddress) -> str:
    """KV key of a client address (leases, AUTH failures): KV keys allow [-/_=.a-zA-Z0-9]."""
    if ip.version == 4:
        return f"v4.{ip}"
    return "v6." + ip.exploded.replace(":", "-")


@functools.lru_cache(maxsize=16384)
def client_address(text: str) -> tuple[IPAddress, str]:
    """A client address and its KV key, cached: the same clients connect again and again,
    and parsing costs more than the rest of a decision. ValueError for a bad address."""
    ip = parse_ip(text)
    return ip, lease_key(ip)


def lease_of(value: bytes) -> tuple[str, float] | None:
    """(user, expires_at) of a stored Lease, None when it cannot be read."""
    try:
        lease = pb.Lease.FromString(value)
    except Exception:
        return None
    return lease.user, lease.expires_at.seconds + lease.expires_at.nanos / 1e9


def decide(rules: RuleSet, ip: IPAddress, lease_user: str | None,
           resp: pb.CheckClientResponse) -> str:
    """Fill `resp` with the decision for `ip` (lease_user: the user of its active lease, or
    None) and return its name: deny, relay, lease or allow. auth_throttled is left to the
    caller (relay-auth knows the failure counters)."""
    rule = rules.match(ip)
    resp.rule_version = rules.version
    if rule is None:
        resp.decided_by = pb.DECIDER_DEFAULT  # tcpserver allows when nothing matches
    else:
        resp.decided_by = pb.DECIDER_RULE
        resp.rule = rule.pattern
        if rule.env:
            resp.env.update(rule.env)
        if not rule.allow:
            return "deny"  # an operator's deny beats a lease: the address may not connect
    resp.allow_connect = True
    relay = rule is not None and "RELAYCLIENT" in rule.env
    decision = "relay" if relay else "allow"
    if not relay and lease_user is not None:
        relay, decision = True, "lease"
        resp.decided_by = pb.DECIDER_LEASE
        resp.lease_user = lease_user
        # vpopmail's open-smtp line for the address, 'IP:allow,RELAYCLIENT="",RBLSMTPD=""',
        # more specific than a range's rule: a range's RBLSMTPD text does not block it
        resp.env["RELAYCLIENT"] = ""
        resp.env["RBLSMTPD"] = ""
    resp.allow_relay = relay
    rbl = resp.env.get("RBLSMTPD")
    # RBLSMTPD="" (or blank, as on the help page's open-smtp lines) exempts from DNSBL;
    # RBLSMTPD with text means reject with that text (smtp-ingress reads it from env).
    resp.dnsbl_exempt = (rbl is not None and not rbl.strip()) or (relay and rbl is None)
    return decision


class ActiveRules:
    """The tcp.smtp in force, following the control bucket: parsed once per change; a bad
    text written past ImportRules is logged and the last good rules stay."""

    def __init__(self, control: ControlView, default_text: str = DEFAULT_RULES) -> None:
        self.default = RuleSet(default_text)
        self.rules = self.default
        self.valid = True  # False while the tcp.smtp in KV is one we refused
        if RULES_FILE in control.data:
            self._on_control(RULES_FILE, control.data[RULES_FILE])
        control.on_change(self._on_control)

    @property
    def imported(self) -> bool:
        """An imported tcp.smtp is in force (not the default)."""
        return self.rules is not self.default

    def _on_control(self, key: str, value: bytes | None) -> None:
        if key != RULES_FILE:
            return
        self.valid = True
        if value is None:
            self.rules = self.default
            log.info("tcp.smtp removed; default rules active",
                     extra={"version": self.default.version})
            return
        try:
            self.rules = RuleSet(value.decode())
        except (RuleError, UnicodeDecodeError) as exc:
            self.valid = False
            log.error("tcp.smtp rejected, keeping version %s: %s", self.rules.version, exc)
            return
        log.info("tcp.smtp loaded", extra={"version": self.rules.version,
                                           "rules": len(self.rules.rules)})
