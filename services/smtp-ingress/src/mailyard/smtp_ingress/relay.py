"""Client of relay-auth (tcp.smtp rules, leases, passwords). A connection's relay decision
comes from the ingress's own live view of rules and leases (relay_view.RelayView, same code
as relay-auth) whenever that view can decide; otherwise it is asked of relay-auth as below.
Every call has a deadline;
an error or a missed deadline returns None and callers fail safe (no relaying, 454 on AUTH),
never open.

Calls in flight are bounded: a burst of thousands of connections would otherwise hold
thousands of gRPC calls (memory, and a loop too busy to finish any of them in time). The
rest wait for a slot, like connections waiting in tcpserver's backlog.

`check_client` (every connection) goes over one long-lived CheckClients stream per process
instead of a unary call per check: a message on an open stream costs both processes a small
fraction of a unary call's CPU. The stream is opened lazily and again after it breaks; each
check keeps its own deadline; when the stream breaks every check waiting on it gets None at
once. A server without CheckClients (UNIMPLEMENTED), or a stream that never opened, falls
back to the unary CheckClient.

AUTH calls stay unary, with a deadline and a bound of their own (auth_timeout, AUTH_SLOTS):
a password check is slow on purpose and waits its turn in relay-auth's bounded pool, so
50 logins at once need seconds, not the relay check's half second, and must never take the
slots the per-connection checks need.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import TYPE_CHECKING, Any

import grpc

from mailyard.api.relayauth.v1 import relayauth_pb2 as ra
from mailyard.api.relayauth.v1.relayauth_pb2_grpc import RelayAuthStub
from mailyard.core import auth
from mailyard.smtp_ingress.metrics import RELAY_DECISIONS
from mailyard.smtp_ingress.relay_view import RelayView

if TYPE_CHECKING:
    from mailyard.api.relayauth.v1.relayauth_pb2_grpc import RelayAuthAsyncStub

log = logging.getLogger(__name__)

# A stream check's outcomes besides an answer: use the unary call for this check instead;
# the check's deadline passed.
_FALLBACK: Any = object()
_TIMEOUT: Any = object()


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(_TIMEOUT)


class _CheckStream:
    """One CheckClients stream: a writer task (gRPC allows one write in flight per call), a
    reader task that hands each answer to the check waiting for its id, and those checks."""

    def __init__(self, stub: RelayAuthAsyncStub) -> None:
        self.call: grpc.aio.StreamStreamCall[ra.CheckClientStreamRequest,
                                             ra.CheckClientStreamResponse] = stub.CheckClients()
        self.outbox: asyncio.Queue[ra.CheckClientStreamRequest] = asyncio.Queue()
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.opened = False        # the server started the stream (its initial metadata came)
        self.answers = 0           # answers received
        self.closed = False
        self.unimplemented = False
        self.tasks = (asyncio.create_task(self._write()), asyncio.create_task(self._read()))

    def submit(self, check_id: int, ip: str) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[check_id] = future
        self.outbox.put_nowait(ra.CheckClientStreamRequest(
            id=check_id, check=ra.CheckClientRequest(ip=ip)))
        return future

    async def _write(self) -> None:
        try:
            # Wait for the server to start the stream before writing: a write racing an
            # UNIMPLEMENTED answer would turn it into INTERNAL. If the call ended instead,
            # the reader reports why.
            await self.call.initial_metadata()
            if self.call.done():
                return
            self.opened = True
            while True:
                await self.call.write(await self.outbox.get())
        except Exception as exc:  # not CancelledError: close() cancels us
            self.close(exc)

    async def _read(self) -> None:
        exc: Exception | None = None
        try:
            while True:
                reply = await self.call.read()
                if not isinstance(reply, ra.CheckClientStreamResponse):
                    break  # grpc.aio.EOF: the server ended the stream
                self.answers += 1
                future = self.waiting.pop(reply.id, None)
                if future is not None and not future.done():
                    if reply.error:
                        log.warning("relay-auth CheckClients refused: %s", reply.error)
                        future.set_result(None)
                    else:
                        future.set_result(reply.result)
        except Exception as e:  # not CancelledError: close() cancels us
            exc = e
        self.close(exc)

    def close(self, exc: Exception | None = None) -> None:
        """End the stream; every check still waiting gets None (or the unary fallback if the
        stream never opened or the server does not know CheckClients). Idempotent."""
        if self.closed:
            return
        self.closed = True
        code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
        self.unimplemented = code == grpc.StatusCode.UNIMPLEMENTED
        fallback = self.unimplemented or not self.opened
        if exc is not None or self.waiting:
            log.warning("relay-auth CheckClients stream ended: %s (%d checks waiting%s)",
                        code.name if code else type(exc).__name__ if exc else "closed",
                        len(self.waiting), ", unary fallback" if fallback else "")
        self.call.cancel()
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_result(_FALLBACK if fallback else None)


class RelayAuthClient:
    # After an UNIMPLEMENTED (a relay-auth older than CheckClients), use unary CheckClient
    # this long before trying the stream again (the server may have been upgraded).
    STREAM_RETRY = 60.0

    AUTH_SLOTS = 256  # AUTH calls in flight; relay-auth itself queues up to AUTH_QUEUE

    def __init__(self, address: str, timeout: float, max_in_flight: int = 64,
                 stream: bool = True, auth_timeout: float = 30.0,
                 view: RelayView | None = None, token: str | None = None) -> None:
        self.view = view  # decides from memory when it can; gRPC otherwise
        self.timeout = timeout
        self.auth_timeout = auth_timeout
        self.auth_slots = asyncio.Semaphore(self.AUTH_SLOTS)
        self.channel = auth.aio_channel(address, token)  # role ingress
        self.stub = RelayAuthStub(self.channel)
        self.slots = asyncio.Semaphore(max_in_flight)
        self.use_stream = stream        # False: unary CheckClient only (bench comparison)
        self._stream: _CheckStream | None = None
        self._ids = itertools.count(1)
        self._unary_until = 0.0
        # counters for tests and the bench: how checks went
        self.streams_opened = 0
        self.stream_checks = 0
        self.unary_checks = 0

    async def _call(self, method: str, request: Any) -> Any:
        """An AUTH call (never a relay check): its own slots and deadline."""
        try:
            async with self.auth_slots:
                return await self._unary(method, request, self.auth_timeout)
        except Exception as exc:
            log.warning("relay-auth %s failed: %s", method, type(exc).__name__)
        return None

    async def _unary(self, method: str, request: Any, timeout: float) -> Any:
        try:
            return await getattr(self.stub, method)(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            log.warning("relay-auth %s failed: %s", method, exc.code().name)
        return None

    async def check_client(self, ip: str) -> ra.CheckClientResponse | None:
        if self.view is not None:
            local = self.view.decide(ip)
            if local is not None:
                RELAY_DECISIONS["local"].inc()
                return local
        answer = await self._check_remote(ip)
        RELAY_DECISIONS["relay_auth" if answer is not None else "failed"].inc()
        if answer is not None and self.view is not None:
            self.view.confirm(answer)
        return answer

    async def confirm_view(self, every: float = 1.0) -> None:
        """Until the view may decide on relay-auth's default rules, ask relay-auth once a
        second (in the background, so the first clients after a start or an idle spell do
        not pay for it). Ends when the view needs no confirmation."""
        assert self.view is not None
        while not self.view.default_confirmed:
            if not self.view.active.imported:
                answer = await self._check_remote("127.0.0.1")
                if answer is not None:
                    self.view.confirm(answer)
                    continue
            await asyncio.sleep(every)

    async def _check_remote(self, ip: str) -> ra.CheckClientResponse | None:
        try:
            async with self.slots:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.timeout
                stream = self._open_stream(loop.time())
                answer = _FALLBACK if stream is None else await self._stream_check(stream, ip)
                if answer is _FALLBACK:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return None
                    self.unary_checks += 1
                    answer = await self._unary("CheckClient", ra.CheckClientRequest(ip=ip),
                                               remaining)
                return answer
        except Exception as exc:
            log.warning("relay-auth CheckClient failed: %s", type(exc).__name__)
        return None

    def _open_stream(self, now: float) -> _CheckStream | None:
        """The open stream, a new one if there is none, or None: use unary calls."""
        stream = self._stream
        if stream is not None and not stream.closed:
            return stream
        if stream is not None and stream.unimplemented:
            self._unary_until = now + self.STREAM_RETRY
            self._stream = None
        if not self.use_stream or now < self._unary_until:
            return None
        self._stream = _CheckStream(self.stub)
        self.streams_opened += 1
        return self._stream

    async def _stream_check(self, stream: _CheckStream, ip: str) -> Any:
        check_id = next(self._ids)
        answers = stream.answers
        future = stream.submit(check_id, ip)
        timer = asyncio.get_running_loop().call_later(self.timeout, _expire, future)
        try:
            answer = await future
        finally:
            timer.cancel()
            stream.waiting.pop(check_id, None)
        if answer is _TIMEOUT:
            # This check fails closed. A stream that answered nothing at all since this
            # check was sent is presumed dead (no reply and no error: a stalled connection)
            # and is replaced for the next checks.
            log.warning("relay-auth CheckClients failed: DEADLINE_EXCEEDED")
            if stream.answers == answers:
                stream.close()
            return None
        if answer is not None and answer is not _FALLBACK:
            self.stream_checks += 1
        return answer

    async def authenticate(self, mechanism: str, username: str, password: str,
                           ip: str) -> ra.AuthenticateResponse | None:
        request = ra.AuthenticateRequest(mechanism=mechanism, username=username, client_ip=ip)
        try:
            request.password = password
        except UnicodeEncodeError:  # not UTF-8 (auth._password): octets no string can hold
            request.password_octets = password.encode("utf-8", "surrogateescape")
        return await self._call("Authenticate", request)

    async def cram_challenge(self, ip: str, hostname: str) -> ra.CramChallengeResponse | None:
        return await self._call("CramChallenge", ra.CramChallengeRequest(
            client_ip=ip, hostname=hostname))

    async def cram_verify(self, challenge_id: str, username: str, digest: str,
                          ip: str) -> ra.AuthenticateResponse | None:
        return await self._call("CramVerify", ra.CramVerifyRequest(
            challenge_id=challenge_id, username=username, digest=digest, client_ip=ip))

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*self._stream.tasks, return_exceptions=True)
        await self.channel.close()
