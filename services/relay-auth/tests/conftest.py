"""relay-auth under test: the real service (in this event loop, or as a child process) on a
private nats-server, reached over real gRPC on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from argon2 import PasswordHasher

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.api.relayauth.v1 import relayauth_pb2_grpc as rpc
from mailyard.core import bus
from mailyard.core.directory import record_key
from mailyard.core.natsserver import NatsServer, free_port
from mailyard.relay_auth.__main__ import serve
from mailyard.relay_auth.settings import Settings
from mailyard.testing import ServiceProcess, grpc_service

# Cheap argon2id parameters: the service verifies with whatever the PHC string says.
HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


async def _seed_mailbox(js: Any, address: str, password: str, *, cram: bool = False) -> None:
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    mailbox = dpb.Mailbox(address=address, password_hash=HASHER.hash(password),
                          cram_md5_secret=password.encode().hex() if cram else "")
    await kv.put(record_key("mailbox", address), mailbox.SerializeToString())


LEASE_USERS = ("alice@example.org", "bob@example.org", "carol@example.org",
               "dave@example.org", "a@example.org")


async def _seed_users(js: Any, *addresses: str) -> None:
    """Mailboxes without a password: what a lease may name (GrantLease refuses others)."""
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    for address in addresses:
        await kv.put(record_key("mailbox", address),
                     dpb.Mailbox(address=address).SerializeToString())


@pytest.fixture
def seed_users() -> Callable[..., Any]:
    """await seed_users(js, *addresses)."""
    return _seed_users


@pytest.fixture
async def lease_users(js: Any) -> tuple[str, ...]:
    await _seed_users(js, *LEASE_USERS)
    return LEASE_USERS


@pytest.fixture
def seed_mailbox() -> Callable[..., Any]:
    """await seed_mailbox(js, address, password, cram=False): what the directory writes."""
    return _seed_mailbox


async def _eventually(probe: Callable[[], Any], tries: int = 400) -> Any:
    """Poll an async probe until it returns something truthy (no timing is asserted)."""
    for _ in range(tries):
        result = await probe()
        if result:
            return result
        await asyncio.sleep(0.025)
    raise AssertionError("condition never became true")


@pytest.fixture
def eventually() -> Callable[..., Any]:
    return _eventually


@dataclass
class Relay:
    settings: Settings
    stub: rpc.RelayAuthStub
    channel: grpc.aio.Channel
    task: asyncio.Task[None]
    stop: asyncio.Event

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.grpc_port}"


async def _wait_serving(channel: grpc.aio.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(300):
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError("relay-auth did not start")


@pytest.fixture
async def start_relay(nats_server: NatsServer) -> AsyncIterator[Callable[..., Any]]:
    """start_relay(**settings) -> Relay, served in this event loop."""
    started: list[Relay] = []

    async def start(**overrides: Any) -> Relay:
        settings = Settings.load(nats_url=nats_server.url, grpc_port=free_port(),
                                 http_port=0, **overrides)
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, stop))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
        relay = Relay(settings, rpc.RelayAuthStub(channel), channel, task, stop)
        started.append(relay)
        waiter = asyncio.ensure_future(_wait_serving(channel))
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            waiter.cancel()
            task.result()
        await waiter
        return relay

    yield start
    for relay in started:
        relay.stop.set()
        await relay.channel.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(relay.task, 15)


@pytest.fixture
def relay_process(tmp_path: Path) -> Iterator[Callable[..., tuple[ServiceProcess, str]]]:
    """relay_process(nats_url, **env) -> (ServiceProcess not yet started, gRPC address)."""
    made: list[ServiceProcess] = []

    def make(nats_url: str, **env: str) -> tuple[ServiceProcess, str]:
        proc, address = grpc_service("mailyard.relay_auth", "RELAYAUTH", nats_url,
                                     tmp_path / "logs", **env)
        made.append(proc)
        return proc, address

    yield make
    for proc in made:
        proc.stop()


@dataclass
class Directory:
    address: str
    stub: Any
    view: Any


@pytest.fixture
async def start_directory(nats_server: NatsServer) -> AsyncIterator[Callable[..., Any]]:
    """start_directory() -> Directory: the real directory service in this event loop (the
    one writer relay-auth hands upgraded password hashes to)."""
    from mailyard.api.directory.v1 import directory_pb2_grpc as dgrpc
    from mailyard.core.directory import DirectoryView
    from mailyard.directory.__main__ import serve as serve_directory
    from mailyard.directory.settings import Settings as DirectorySettings

    running: list[tuple[asyncio.Event, asyncio.Task[None], grpc.aio.Channel, Any]] = []

    async def start() -> Directory:
        settings = DirectorySettings.load(nats_url=nats_server.url, grpc_port=free_port(),
                                          http_port=0)
        stop = asyncio.Event()
        task = asyncio.create_task(serve_directory(settings, stop))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
        nc = await bus.connect(nats_server.url, "pytest-directory-view")
        view = DirectoryView()
        await view.start(nc.jetstream())
        running.append((stop, task, channel, (nc, view)))
        await _wait_serving(channel)
        return Directory(f"127.0.0.1:{settings.grpc_port}", dgrpc.DirectoryStub(channel), view)

    yield start
    for stop, task, channel, (nc, view) in running:
        stop.set()
        await channel.close()
        await view.stop()
        await nc.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
