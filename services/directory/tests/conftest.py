"""The directory under test: its real servicers on a real gRPC server (127.0.0.1, free port)
over the test's private nats-server; `replica()` starts as many as a test needs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from mailyard.api.control.v1 import control_pb2, control_pb2_grpc
from mailyard.api.directory.v1 import directory_pb2, directory_pb2_grpc
from mailyard.core import bus
from mailyard.core.control import ControlView
from mailyard.core.directory import DirectoryView
from mailyard.core.grpcserver import GrpcServer, service_name
from mailyard.core.kvview import KVView
from mailyard.core.srs_keys import list_cookie_secrets
from mailyard.directory.control_service import ControlService
from mailyard.directory.directory_service import DirectoryService
from mailyard.directory.store import KVStore


@dataclass
class Replica:
    directory: directory_pb2_grpc.DirectoryStub
    control: control_pb2_grpc.ControlStub
    view: DirectoryView
    control_view: ControlView
    server: GrpcServer
    channel: grpc.aio.Channel
    closers: list[Any] = field(default_factory=list)


async def start_replica(js: Any) -> Replica:
    view, control_view = DirectoryView(), ControlView()
    await view.start(js)
    await control_view.start(js)
    server = GrpcServer("127.0.0.1", 0, [
        (directory_pb2_grpc.add_DirectoryServicer_to_server,
         DirectoryService(KVStore(js, bus.KV_DIRECTORY), view,
                          cookie_secrets=list_cookie_secrets(js)),
         service_name(directory_pb2, "Directory")),
        (control_pb2_grpc.add_ControlServicer_to_server,
         ControlService(KVStore(js, bus.KV_CONTROL), control_view),
         service_name(control_pb2, "Control")),
    ])
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return Replica(directory_pb2_grpc.DirectoryStub(channel),
                   control_pb2_grpc.ControlStub(channel), view, control_view, server, channel)


async def stop_replica(replica: Replica) -> None:
    await replica.channel.close()
    await replica.server.stop(0)
    await replica.view.stop()
    await replica.control_view.stop()


@pytest.fixture
async def replica_factory(js: Any) -> AsyncIterator[Callable[[], Any]]:
    started: list[Replica] = []

    async def make() -> Replica:
        replica = await start_replica(js)
        started.append(replica)
        return replica

    yield make
    for replica in started:
        with contextlib.suppress(Exception):
            await stop_replica(replica)


@pytest.fixture
async def svc(replica_factory: Callable[[], Any]) -> Replica:
    replica: Replica = await replica_factory()
    return replica


@pytest.fixture
async def dirstub(svc: Replica) -> directory_pb2_grpc.DirectoryStub:
    return svc.directory


async def wait_until(view: KVView, predicate: Callable[[], bool], timeout: float = 10.0
                     ) -> None:
    """Wait for a watch to deliver what a test expects (event-driven, bounded)."""
    changed = asyncio.Event()
    view.on_change(lambda _k, _v: changed.set())
    async with asyncio.timeout(timeout):
        while not predicate():
            changed.clear()
            if predicate():
                return
            await changed.wait()


def code_of(exc_info: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> grpc.StatusCode:
    return exc_info.value.code()


@pytest.fixture
async def reader(js: Any) -> AsyncIterator[DirectoryView]:
    """What every service reads: a DirectoryView of the test's KV."""
    view = DirectoryView()
    await view.start(js)
    yield view
    await view.stop()


@pytest.fixture
async def example(dirstub: directory_pb2_grpc.DirectoryStub) -> directory_pb2_grpc.DirectoryStub:
    """The directory with the domain example.com."""
    await dirstub.AddDomain(directory_pb2.AddDomainRequest(name="example.com"))
    return dirstub
