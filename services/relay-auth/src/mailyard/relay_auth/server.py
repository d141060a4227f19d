"""The RelayAuth gRPC servicer: tcp.smtp decisions, leases, AUTH, rule import.

CheckClient answers from memory only (rules parsed once per change, leases and AUTH failure
counters mirrored from KV), so smtp-ingress can call it on every connection. CheckClients is
the same decision over one long-lived bidirectional stream (what smtp-ingress uses: a message
on an open stream costs the two processes far less CPU than a unary call).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import nats.errors
import nats.js.errors
from google.protobuf.message import Message

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.api.relayauth.v1 import relayauth_pb2_grpc as rpc
from mailyard.core.control import ControlView
from mailyard.core.directory import DirectoryView, canonical, record_key
from mailyard.core.errors import status_details
from mailyard.core.openrelay import open_relay
from mailyard.core.paging import BadPage
from mailyard.core.relaypolicy import (
    MAX_LEASE_TTL,
    RULES_FILE,
    ActiveRules,
    client_address,
    decide,
    lease_key,
)
from mailyard.core.tcprules import IPAddress, RuleError, RuleSet
from mailyard.relay_auth import metrics
from mailyard.relay_auth.auth import Authenticator
from mailyard.relay_auth.leases import IMPORT, MANUAL, LeaseStore
from mailyard.relay_auth.pool import Busy
from mailyard.relay_auth.throttle import Throttle, address_key

log = logging.getLogger(__name__)

_DECISIONS = ("deny", "relay", "lease", "allow")
# AuthenticateRequest.protocol: SMTP AUTH, or a mailbox login (which grants a lease).
SMTP_PROTOCOLS = ("", "smtp")
LOGIN_PROTOCOLS = ("imap", "pop3")
Context = grpc.aio.ServicerContext[Message, Message]
T = TypeVar("T")


async def _invalid(context: Context, details: str) -> None:
    """INVALID_ARGUMENT (context.abort raises, so the handler ends here)."""
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, status_details(details))


async def _valid_ip(text: str, context: Context) -> None:
    try:
        client_address(text)
    except ValueError:
        await _invalid(context, f"not an IP address: {text!r}")
        raise  # abort raises; this keeps type checkers honest


def _needs_nats(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """For the calls that read or write a KV bucket: NATS unreachable or slow is
    UNAVAILABLE, which clients retry, not UNKNOWN with a traceback."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> T:
        try:
            return await method(self, request, context)
        except (nats.errors.Error, TimeoutError) as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"NATS: {exc}")
            raise

    return wrapper


def _auth_reply(outcome: tuple[int, str]) -> pb.AuthenticateResponse:
    result, user = outcome
    return pb.AuthenticateResponse(result=result, user=user)  # type: ignore[arg-type]


def rules_to_pb(rules: RuleSet) -> pb.RuleSet:
    return pb.RuleSet(version=rules.version, text=rules.text, rules=[
        pb.Rule(pattern=r.pattern, allow=r.allow, env=r.env) for r in rules.rules])


class RelayAuthServicer(rpc.RelayAuthServicer):
    def __init__(self, default_rules: str, control: ControlView, leases: LeaseStore,
                 throttle: Throttle, auth: Authenticator, directory: DirectoryView) -> None:
        self.active = ActiveRules(control, default_rules)  # follows tcp.smtp in KV
        self.control = control
        self.directory = directory
        self.leases = leases
        self.throttle = throttle
        self.auth = auth
        self._checks = {d: metrics.CHECKS.labels(d) for d in _DECISIONS}
        self._streams: set[asyncio.Task[Any]] = set()  # the open CheckClients calls
        self._closing = False

    def end_streams(self) -> None:
        """At a stop: end every open CheckClients call, and any opened from now on. Each
        smtp-ingress holds one for its life, so the server's grace would otherwise always
        run out; the ingress falls back to unary checks and opens its stream elsewhere."""
        self._closing = True
        for task in self._streams:
            task.cancel()

    @property
    def rules(self) -> RuleSet:
        return self.active.rules

    # -- CheckClient -----------------------------------------------------------------------

    async def CheckClient(self, request: pb.CheckClientRequest,
                          context: Context) -> pb.CheckClientResponse:
        # The hot path (every SMTP connection): memory only, no await unless the request is
        # bad, no logging, pre-bound metric children.
        try:
            ip, key = client_address(request.ip)
        except ValueError:
            await _invalid(context, f"not an IP address: {request.ip!r}")
            raise
        return self.check(ip, key)

    async def CheckClients(self, request_iterator: AsyncIterable[pb.CheckClientStreamRequest],
                           context: Context) -> AsyncIterator[pb.CheckClientStreamResponse]:
        # Each request is answered as it arrives, with CheckClient's decision code. check()
        # never awaits, so answers cannot interleave; they come back in request order (the
        # client matches them by id and does not rely on it). A bad address fails that one
        # request (`error`), not the stream the other checks share. Initial metadata goes out
        # at once: the client waits for it to know the stream is open before it writes.
        await context.send_initial_metadata(())
        if self._closing:
            return
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            async for request in request_iterator:
                reply = pb.CheckClientStreamResponse(id=request.id)
                try:
                    ip, key = client_address(request.check.ip)
                except ValueError:
                    reply.error = f"not an IP address: {request.check.ip!r}"
                else:
                    self.check(ip, key, reply.result)
                yield reply
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # ours (end_streams): the call ends with OK, so the server need not wait for
            # it (gRPC sends no status for a cancelled handler: the grace runs out)
            task.uncancel()
        finally:
            self._streams.discard(task)

    def check(self, ip: IPAddress, key: str | None = None,
              resp: pb.CheckClientResponse | None = None) -> pb.CheckClientResponse:
        """The decision for `ip`, written into `resp` (a fresh message if None, or a stream
        response's field, which saves a copy) and returned."""
        if key is None:
            key = lease_key(ip)
        now = time.time()
        if resp is None:
            resp = pb.CheckClientResponse()
        resp.auth_throttled = self.throttle.key_throttled(
            key if ip.version == 4 else address_key(ip), now)  # IPv6: by its /64
        lease = self.leases.lookup_key(key, now)
        decision = decide(self.active.rules, ip, lease.user if lease is not None else None,
                          resp)
        self._checks[decision].inc()
        return resp

    # -- AUTH ------------------------------------------------------------------------------

    @_needs_nats
    async def Authenticate(self, request: pb.AuthenticateRequest,
                           context: Context) -> pb.AuthenticateResponse:
        protocol = request.protocol.lower()
        if protocol not in SMTP_PROTOCOLS + LOGIN_PROTOCOLS:
            await _invalid(context, f"unknown protocol: {request.protocol!r}")
        if protocol in LOGIN_PROTOCOLS:
            # The lease is for the client's address: without a valid one there is nothing
            # to grant, so refuse before the password is even checked.
            await _valid_ip(request.client_ip, context)
        # An 8-bit password that is not UTF-8 arrives as octets; inside relay-auth it is the
        # str those octets decode to with surrogateescape (lossless; password_hashes.octets
        # gives the octets back), so the throttle, cache and pool keep one type.
        password = request.password or request.password_octets.decode("utf-8",
                                                                        "surrogateescape")
        try:
            outcome = await self.auth.password(request.mechanism, request.username,
                                               password, request.client_ip)
        except Busy:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                "too many password checks waiting; try again")
            raise
        reply = _auth_reply(outcome)
        if protocol in LOGIN_PROTOCOLS and reply.result == pb.AUTH_RESULT_OK:
            # vpopmail's POP3 server wrote open-smtp at login; this is that write, in the
            # same call as the password check (one round trip for the bridge).
            lease = await self.leases.grant(request.client_ip, reply.user, source=protocol)
            log.info("lease granted at login", extra={"ip": lease.ip, "user": lease.user,
                                                      "source": protocol,
                                                      "expires_at": lease.expires_at})
            reply.lease.CopyFrom(lease.to_pb())
        return reply

    @_needs_nats
    async def CramChallenge(self, request: pb.CramChallengeRequest,
                            context: Context) -> pb.CramChallengeResponse:
        challenge_id, challenge = await self.auth.cram_challenge(request.client_ip,
                                                                 request.hostname)
        return pb.CramChallengeResponse(challenge_id=challenge_id, challenge=challenge)

    @_needs_nats
    async def CramVerify(self, request: pb.CramVerifyRequest,
                         context: Context) -> pb.AuthenticateResponse:
        return _auth_reply(await self.auth.cram_verify(request.challenge_id, request.username,
                                                       request.digest, request.client_ip))

    # -- leases ----------------------------------------------------------------------------

    @_needs_nats
    async def GrantLease(self, request: pb.GrantLeaseRequest, context: Context) -> pb.Lease:
        await _valid_ip(request.ip, context)
        if not request.user:
            await _invalid(context, "a lease needs a user")
        # seconds and nanos as sent: ToTimedelta() overflows on a Duration past its range
        ttl = request.ttl.seconds + request.ttl.nanos / 1e9 if request.HasField("ttl") else 0.0
        if not 0 <= ttl <= MAX_LEASE_TTL:
            await _invalid(context, f"ttl must be positive and at most {MAX_LEASE_TTL} seconds "
                                    "(366 days)")
        # A lease names who logged in from the address; a name that is no mailbox is a typo
        # that would open relaying for nobody's sake. open-smtp imports name no one.
        user = request.user if request.imported else self._alias_domain_user(request.user)
        if not request.imported and not await self._is_mailbox(user):
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                status_details(f"no mailbox {request.user}"))
        lease = await self.leases.grant(request.ip, user, ttl or None,
                                        source=IMPORT if request.imported else MANUAL)
        log.info("lease granted", extra={"ip": lease.ip, "user": lease.user,
                                         "source": lease.source,
                                         "expires_at": lease.expires_at})
        return lease.to_pb()

    def _alias_domain_user(self, user: str) -> str:
        """joe@alias.test names joe@real.test's mailbox (as its login does): the lease says
        so. Any other name is kept as given."""
        if "@" not in user or len(user) > 1024:
            return user
        try:
            address = canonical(user)
        except ValueError:  # no directory key can be made of it: _is_mailbox says no
            return user
        real = self.directory.real_address(address)
        return user if real == address else real

    async def _is_mailbox(self, user: str) -> bool:
        if "@" not in user or len(user) > 1024:
            return False
        key = record_key("mailbox", user)
        if key in self.directory.data:
            return True
        # The live view may trail a `user add` made a moment ago: ask the bucket itself.
        if self.directory.kv is None:
            return False
        try:
            return (await self.directory.kv.get(key)).value is not None
        except nats.js.errors.KeyNotFoundError:
            return False

    @_needs_nats
    async def RevokeLease(self, request: pb.RevokeLeaseRequest,
                          context: Context) -> pb.RevokeLeaseResponse:
        await _valid_ip(request.ip, context)
        revoked = await self.leases.revoke(request.ip)
        if revoked:
            log.info("lease revoked", extra={"ip": request.ip})
        return pb.RevokeLeaseResponse(revoked=revoked)

    async def ListLeases(self, request: pb.ListLeasesRequest,
                         context: Context) -> pb.ListLeasesResponse:
        try:
            leases, token = self.leases.page(request.page_size, request.page_token)
        except BadPage as exc:
            await _invalid(context, str(exc))
            raise
        return pb.ListLeasesResponse(leases=leases, next_page_token=token)

    # -- rules -----------------------------------------------------------------------------

    @_needs_nats
    async def ImportRules(self, request: pb.ImportRulesRequest, context: Context) -> pb.RuleSet:
        try:
            rules = RuleSet(request.text)
        except RuleError as exc:
            await _invalid(context, f"tcp.smtp {exc}")
            raise
        if open_relay(rules.rules):
            await _invalid(context, "tcp.smtp refused: RELAYCLIENT for every address (a "
                                    "catch-all, 0.0.0.0/0 or ::/0) is an open relay")
        assert self.control.kv is not None
        data = request.text.encode()
        try:
            await self.control.kv.put(RULES_FILE, data)
        except nats.errors.MaxPayloadError:  # refused by nats-py before anything is sent
            await _invalid(context, f"tcp.smtp is {len(data)} bytes; the control bucket "
                                    "takes one message of at most nats-server's max_payload "
                                    "(1 MiB by default)")
            raise
        self.active.rules = rules  # the watch confirms it here, and brings it to the others
        log.info("tcp.smtp imported", extra={"version": rules.version, "rules": len(rules.rules)})
        return rules_to_pb(rules)

    async def ShowRules(self, request: pb.ShowRulesRequest, context: Context) -> pb.RuleSet:
        return rules_to_pb(self.rules)
