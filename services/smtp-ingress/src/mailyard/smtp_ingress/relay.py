"""Client of relay-auth (tcp.smtp rules, leases, passwords). Every call has a deadline;
an error or a missed deadline returns None and callers fail safe (no relaying, 454 on AUTH),
never open.

Calls in flight are bounded: a burst of thousands of connections would otherwise hold
thousands of gRPC calls (memory, and a loop too busy to finish any of them in time). The
rest wait for a slot, like connections waiting in tcpserver's backlog."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from mailyard.api.relayauth.v1 import relayauth_pb2 as ra
from mailyard.api.relayauth.v1.relayauth_pb2_grpc import RelayAuthStub

log = logging.getLogger(__name__)


class RelayAuthClient:
    def __init__(self, address: str, timeout: float, max_in_flight: int = 64) -> None:
        self.timeout = timeout
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = RelayAuthStub(self.channel)
        self.slots = asyncio.Semaphore(max_in_flight)

    async def _call(self, method: str, request: Any) -> Any:
        try:
            async with self.slots:
                return await getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            log.warning("relay-auth %s failed: %s", method, exc.code().name)
        except Exception as exc:
            log.warning("relay-auth %s failed: %s", method, type(exc).__name__)
        return None

    async def check_client(self, ip: str) -> ra.CheckClientResponse | None:
        return await self._call("CheckClient", ra.CheckClientRequest(ip=ip))

    async def authenticate(self, mechanism: str, username: str, password: str,
                           ip: str) -> ra.AuthenticateResponse | None:
        return await self._call("Authenticate", ra.AuthenticateRequest(
            mechanism=mechanism, username=username, password=password, client_ip=ip))

    async def cram_challenge(self, ip: str, hostname: str) -> ra.CramChallengeResponse | None:
        return await self._call("CramChallenge", ra.CramChallengeRequest(
            client_ip=ip, hostname=hostname))

    async def cram_verify(self, challenge_id: str, username: str, digest: str,
                          ip: str) -> ra.AuthenticateResponse | None:
        return await self._call("CramVerify", ra.CramVerifyRequest(
            challenge_id=challenge_id, username=username, digest=digest, client_ip=ip))

    async def close(self) -> None:
        await self.channel.close()
