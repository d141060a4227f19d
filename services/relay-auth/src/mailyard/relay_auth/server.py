"""The RelayAuth gRPC servicer: tcp.smtp decisions, leases, AUTH, rule import.

CheckClient answers from memory only (rules parsed once per change, leases and AUTH failure
counters mirrored from KV), so smtp-ingress can call it on every connection.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.message import Message

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.api.relayauth.v1 import relayauth_pb2_grpc as rpc
from mailyard.core.control import ControlView
from mailyard.relay_auth import metrics
from mailyard.relay_auth.auth import Authenticator
from mailyard.relay_auth.leases import LeaseStore
from mailyard.relay_auth.rules import IPAddress, RuleError, RuleSet, parse_ip
from mailyard.relay_auth.throttle import Throttle

log = logging.getLogger(__name__)
RULES_FILE = "tcp.smtp"

_DECISIONS = ("deny", "relay", "lease", "allow")


def open_relay(rules: RuleSet) -> bool:
    return any(r.pattern == "" and r.allow and "RELAYCLIENT" in r.env for r in rules.rules)


def rules_to_pb(rules: RuleSet) -> pb.RuleSet:
    return pb.RuleSet(version=rules.version, text=rules.text, rules=[
        pb.Rule(pattern=r.pattern, allow=r.allow, env=r.env) for r in rules.rules])


class RelayAuthServicer(rpc.RelayAuthServicer):
    def __init__(self, default_rules: str, control: ControlView, leases: LeaseStore,
                 throttle: Throttle, auth: Authenticator) -> None:
        self.default = RuleSet(default_rules)
        self.rules = self.default
        self.control = control
        self.leases = leases
        self.throttle = throttle
        self.auth = auth
        for decision in _DECISIONS:
            metrics.CHECKS.labels(decision)
        if RULES_FILE in control.data:
            self._on_control(RULES_FILE, control.data[RULES_FILE])
        control.on_change(self._on_control)

    # -- hot rules -------------------------------------------------------------------------

    def _on_control(self, key: str, value: bytes | None) -> None:
        if key != RULES_FILE:
            return
        if value is None:
            self.rules = self.default
            log.info("tcp.smtp removed; default rules active",
                     extra={"version": self.default.version})
            return
        try:
            self.rules = RuleSet(value.decode())
        except (RuleError, UnicodeDecodeError) as exc:
            # Someone wrote a bad file past ImportRules: keep the last good rules.
            log.error("tcp.smtp rejected, keeping version %s: %s", self.rules.version, exc)
            return
        log.info("tcp.smtp loaded", extra={"version": self.rules.version,
                                           "rules": len(self.rules.rules)})

    # -- CheckClient -----------------------------------------------------------------------

    async def _ip(self, text: str, context: grpc.aio.ServicerContext[Message, Message]
                  ) -> IPAddress:
        try:
            return parse_ip(text)
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an IP address: {text!r}")
            raise  # abort raises; this keeps type checkers honest

    async def CheckClient(self, request: pb.CheckClientRequest,
                          context: grpc.aio.ServicerContext[Message, Message]
                          ) -> pb.CheckClientResponse:
        ip = await self._ip(request.ip, context)
        return self.check(ip)

    def check(self, ip: IPAddress) -> pb.CheckClientResponse:
        rules = self.rules
        rule = rules.match(ip)
        resp = pb.CheckClientResponse(rule_version=rules.version,
                                      auth_throttled=self.throttle.ip_throttled(ip))
        if rule is None:
            resp.decided_by = pb.DECIDER_DEFAULT  # tcpserver allows when nothing matches
        else:
            resp.decided_by = pb.DECIDER_RULE
            resp.rule = rule.pattern
            resp.env.update(rule.env)
        if rule is not None and not rule.allow:
            # An operator's deny beats a lease: the address may not even connect.
            metrics.CHECKS.labels("deny").inc()
            return resp
        resp.allow_connect = True
        relay = rule is not None and "RELAYCLIENT" in rule.env
        decision = "relay" if relay else "allow"
        if not relay and (lease := self.leases.lookup(ip)) is not None:
            relay, decision = True, "lease"
            resp.decided_by = pb.DECIDER_LEASE
            resp.lease_user = lease.user
            resp.env.setdefault("RELAYCLIENT", "")
        resp.allow_relay = relay
        rbl = resp.env.get("RBLSMTPD")
        # RBLSMTPD="" (or blank, as on the help page's open-smtp lines) exempts from DNSBL;
        # RBLSMTPD with text means reject with that text (smtp-ingress reads it from env).
        resp.dnsbl_exempt = (rbl is not None and not rbl.strip()) or (relay and rbl is None)
        metrics.CHECKS.labels(decision).inc()
        return resp

    # -- AUTH ------------------------------------------------------------------------------

    async def Authenticate(self, request: pb.AuthenticateRequest,
                           context: grpc.aio.ServicerContext[Message, Message]
                           ) -> pb.AuthenticateResponse:
        result, user = await self.auth.password(request.mechanism, request.username,
                                                request.password, request.client_ip)
        return pb.AuthenticateResponse(result=result, user=user)  # type: ignore[arg-type]

    async def CramChallenge(self, request: pb.CramChallengeRequest,
                            context: grpc.aio.ServicerContext[Message, Message]
                            ) -> pb.CramChallengeResponse:
        challenge_id, challenge = await self.auth.cram_challenge(request.client_ip,
                                                                 request.hostname)
        return pb.CramChallengeResponse(challenge_id=challenge_id, challenge=challenge)

    async def CramVerify(self, request: pb.CramVerifyRequest,
                         context: grpc.aio.ServicerContext[Message, Message]
                         ) -> pb.AuthenticateResponse:
        result, user = await self.auth.cram_verify(request.challenge_id, request.username,
                                                   request.digest, request.client_ip)
        return pb.AuthenticateResponse(result=result, user=user)  # type: ignore[arg-type]

    # -- leases ----------------------------------------------------------------------------

    async def GrantLease(self, request: pb.GrantLeaseRequest,
                         context: grpc.aio.ServicerContext[Message, Message]) -> pb.Lease:
        await self._ip(request.ip, context)
        if not request.user:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a lease needs a user")
        ttl = request.ttl.ToTimedelta().total_seconds() if request.HasField("ttl") else 0.0
        if ttl < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ttl must be positive")
        lease = await self.leases.grant(request.ip, request.user, ttl or None)
        log.info("lease granted", extra={"ip": lease.ip, "user": lease.user,
                                         "expires_at": lease.expires_at})
        return lease.to_pb()

    async def RevokeLease(self, request: pb.RevokeLeaseRequest,
                          context: grpc.aio.ServicerContext[Message, Message]
                          ) -> pb.RevokeLeaseResponse:
        await self._ip(request.ip, context)
        revoked = await self.leases.revoke(request.ip)
        if revoked:
            log.info("lease revoked", extra={"ip": request.ip})
        return pb.RevokeLeaseResponse(revoked=revoked)

    async def ListLeases(self, request: pb.ListLeasesRequest,
                         context: grpc.aio.ServicerContext[Message, Message]
                         ) -> pb.ListLeasesResponse:
        return pb.ListLeasesResponse(leases=[x.to_pb() for x in self.leases.active()])

    # -- rules -----------------------------------------------------------------------------

    async def ImportRules(self, request: pb.ImportRulesRequest,
                          context: grpc.aio.ServicerContext[Message, Message]) -> pb.RuleSet:
        try:
            rules = RuleSet(request.text)
        except RuleError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"tcp.smtp {exc}")
            raise
        if open_relay(rules):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "tcp.smtp refused: a catch-all rule with RELAYCLIENT is an "
                                "open relay")
        assert self.control.kv is not None
        await self.control.kv.put(RULES_FILE, request.text.encode())
        self.rules = rules  # the watch confirms it here and brings it to the other replicas
        log.info("tcp.smtp imported", extra={"version": rules.version, "rules": len(rules.rules)})
        return rules_to_pb(rules)

    async def ShowRules(self, request: pb.ShowRulesRequest,
                        context: grpc.aio.ServicerContext[Message, Message]) -> pb.RuleSet:
        return rules_to_pb(self.rules)
