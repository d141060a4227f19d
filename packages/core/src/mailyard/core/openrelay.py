"""Is a tcp.smtp an open relay? relay-auth's ImportRules and DEFAULT_RULES refuse one, and
`mailyard import qmail` finds one in its dry run.

An open relay is a tcp.smtp whose RELAYCLIENT rules together cover every IPv4 or every IPv6
address: the catch-all `:allow,RELAYCLIENT=""`, but also `0.0.0.0/0`, `::/0` or `0-255.`
with RELAYCLIENT, which relay for everyone just the same. Rules that relay for some networks
only, however large, are the operator's call.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from mailyard.core.tcprules import Rule


def open_relay(rules: Iterable[Rule]) -> bool:
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for rule in rules:
        if rule.allow and "RELAYCLIENT" in rule.env:
            for net in rule.networks:
                if isinstance(net, ipaddress.IPv4Network):
                    v4.append(net)
                else:
                    v6.append(net)
    return (list(ipaddress.collapse_addresses(v4)) == [ipaddress.IPv4Network("0.0.0.0/0")]
            or list(ipaddress.collapse_addresses(v6)) == [ipaddress.IPv6Network("::/0")])
