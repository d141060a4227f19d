"""smtp-ingress's own live view of the relay rules and leases, so that a connection gets its
relay decision from memory, with relay-auth's own code (mailyard.core.relaypolicy).

relay-auth stays the one service that holds rules and leases and answers for them over
gRPC; both live in JetStream KV (tcp.smtp in "control", leases in "relay_leases"), which
this view watches like the directory and control views. So a connection costs no round
trip, and a relay-auth that is paused or restarting is invisible to clients whose rules and
leases are known; a rule change or a lease applies as soon as the watch brings it
(milliseconds), as with relay-auth's own mirror.

The view decides only when it can decide exactly as relay-auth would: the control and lease
views are loaded, the tcp.smtp in KV is one both accept, and, while no tcp.smtp is
imported, relay-auth has answered once with the rule version of our DEFAULT_RULES (an
operator may have set MAILYARD_RELAYAUTH_DEFAULT_RULES). Otherwise decide() says None and
the caller asks relay-auth over gRPC, which fails closed when it cannot answer. AUTH
throttling of an address is relay-auth's to decide at AUTH time (auth_throttled stays false
in a local decision; relay-auth answers THROTTLED to the AUTH itself).
"""

from __future__ import annotations

import time

from nats.js import JetStreamContext

from mailyard.api.relayauth.v1 import relayauth_pb2 as ra
from mailyard.core import bus
from mailyard.core.control import ControlView
from mailyard.core.kvview import KVView
from mailyard.core.relaypolicy import ActiveRules, client_address, decide, lease_of


class RelayView:
    def __init__(self, control: ControlView) -> None:
        self.control = control
        self.active = ActiveRules(control)
        self.leases = KVView(bus.KV_LEASES)
        self.leases.on_change(self._lease_changed)
        self._lease: dict[str, tuple[str, float]] = {}   # key -> (user, expires_at)
        self.default_confirmed = False

    async def start(self, js: JetStreamContext) -> None:
        await self.leases.start(js, timeout=60.0)  # 100,000 leases load in a few seconds

    async def stop(self) -> None:
        await self.leases.stop()

    def _lease_changed(self, key: str, value: bytes | None) -> None:
        lease = lease_of(value) if value is not None else None
        if lease is None:
            self._lease.pop(key, None)
        else:
            self._lease[key] = lease

    @property
    def ready(self) -> bool:
        return (self.control.ready and self.leases.ready and self.active.valid
                and (self.active.imported or self.default_confirmed))

    def decide(self, ip_text: str) -> ra.CheckClientResponse | None:
        """The decision from memory, or None: ask relay-auth."""
        if not self.ready:
            return None
        try:
            ip, key = client_address(ip_text)
        except ValueError:
            return None
        lease = self._lease.get(key)
        user = lease[0] if lease is not None and lease[1] > time.time() else None
        resp = ra.CheckClientResponse()
        decide(self.active.rules, ip, user, resp)
        return resp

    def confirm(self, answer: ra.CheckClientResponse) -> None:
        """Learn from relay-auth's answer whether its default rules are ours."""
        if not self.active.imported and answer.rule_version == self.active.default.version:
            self.default_confirmed = True
