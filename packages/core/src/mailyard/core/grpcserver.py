"""gRPC servers with grpc.health.v1 and reflection, so grpcurl can list and call them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mailyard.core import auth
from mailyard.core.limits import MAX_BODY, MAX_IDLE, MAX_RPCS
from mailyard.core.settings import ServiceSettings

Registration = tuple[Callable[[Any, grpc.aio.Server], None], Any, str]  # add_fn, servicer, name


class GrpcServer:
    def __init__(self, host: str, port: int, services: Sequence[Registration],
                 tokens_file: Path | None = None, *, max_rpcs: int = MAX_RPCS,
                 max_idle: float = MAX_IDLE, max_body: int = MAX_BODY) -> None:
        """tokens_file: the admin plane's token table (mailyard.core.auth); without one
        the server may only listen on loopback. Past max_rpcs calls at once a call fails
        RESOURCE_EXHAUSTED, as does a request past max_body bytes; a connection without a
        call for max_idle seconds is closed (core.limits; a service passes its settings'
        values, grpc_limits())."""
        tokens = auth.server_tokens(tokens_file, host, f"gRPC {host}:{port}")
        self.server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0),
                     ("grpc.max_receive_message_length", max_body),
                     ("grpc.max_connection_idle_ms", int(max_idle * 1000))],
            maximum_concurrent_rpcs=max_rpcs,
            interceptors=[auth.AuthInterceptor(tokens)] if tokens else None)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME]
        for add, servicer, name in services:
            add(servicer, self.server)
            names.append(name)
        self.names = [n for _, _, n in services]
        reflection.enable_server_reflection(names, self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if not self.port:
            raise OSError(f"cannot bind gRPC on {host}:{port}")

    async def start(self) -> None:
        await self.server.start()
        await self.set_serving(True)

    async def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set("", status)
        for name in self.names:
            await self.health.set(name, status)

    async def set_service_serving(self, name: str, serving: bool) -> None:
        """One service's health alone (a queue standby answers History, not QueueService)."""
        await self.health.set(name, health_pb2.HealthCheckResponse.SERVING if serving
                              else health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace: float = 5.0) -> None:
        await self.set_serving(False)
        await self.server.stop(grace)


def grpc_limits(settings: ServiceSettings) -> dict[str, Any]:
    """GrpcServer's bounds as a service's settings have them (ADMIN_MAX_BODY, ...)."""
    return {"max_rpcs": settings.grpc_max_rpcs, "max_idle": settings.grpc_max_idle,
            "max_body": settings.admin_max_body}


def service_name(pb2_module: Any, service: str) -> str:
    return str(pb2_module.DESCRIPTOR.services_by_name[service].full_name)
