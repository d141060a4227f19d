"""`python -m mailyard.directory`: the one writer of the "directory" and "control" buckets.

gRPC (Directory + Control) on GRPC_HOST:GRPC_PORT; /healthz /readyz /metrics and the same
admin calls over HTTP (web.py, /api/..., OpenAPI at /docs) on HTTP_PORT.
Several replicas may run: every write is a CAS on the record's revision.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client as NATS

from mailyard.api.control.v1 import control_pb2, control_pb2_grpc
from mailyard.api.directory.v1 import directory_pb2, directory_pb2_grpc
from mailyard.core import bus, metrics
from mailyard.core.control import ControlView
from mailyard.core.directory import DirectoryView
from mailyard.core.grpcserver import GrpcServer, grpc_limits, service_name
from mailyard.core.http import HttpServer, app_limits, http_limits, make_app
from mailyard.core.service import run
from mailyard.core.srs_keys import list_cookie_secrets
from mailyard.directory import web
from mailyard.directory.control_service import ControlService
from mailyard.directory.directory_service import DirectoryService
from mailyard.directory.renormalise import renormalise
from mailyard.directory.settings import Settings
from mailyard.directory.store import KVStore

log = logging.getLogger(__name__)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    metrics.set_build("directory")
    nc: NATS = await bus.connect(settings.nats_url, f"directory-{settings.instance}")
    js = nc.jetstream()
    directory_view, control_view = DirectoryView(), ControlView()
    await directory_view.start(js)
    await control_view.start(js)

    store = KVStore(js, bus.KV_DIRECTORY)
    # before serving, so a write cannot race the move of the record it names
    await renormalise(store, directory_view)
    directory = DirectoryService(store, directory_view,
                                 min_password_length=settings.min_password_length,
                                 cookie_secrets=list_cookie_secrets(js))
    control = ControlService(KVStore(js, bus.KV_CONTROL), control_view)
    grpc_server = GrpcServer(settings.grpc_host, settings.grpc_port, [
        (directory_pb2_grpc.add_DirectoryServicer_to_server, directory,
         service_name(directory_pb2, "Directory")),
        (control_pb2_grpc.add_ControlServicer_to_server, control,
         service_name(control_pb2, "Control")),
    ], tokens_file=settings.tokens_file, **grpc_limits(settings))
    await grpc_server.start()

    http = None
    if settings.http_port:
        app = make_app("directory", {
            "nats": lambda: nc.is_connected,
            "directory_view": lambda: directory_view.ready,
            "control_view": lambda: control_view.ready,
        }, tokens_file=settings.tokens_file, host=settings.http_host, **app_limits(settings))
        web.mount(app, directory, control)
        http = HttpServer(app, settings.http_host, settings.http_port, **http_limits(settings))
        await http.start()
    log.info("serving", extra={"grpc_port": grpc_server.port, "http_port": settings.http_port})

    await stop.wait()
    await grpc_server.stop(grace=5.0)  # lets in-flight writes finish
    if http:
        await http.stop()
    await directory_view.stop()
    await control_view.stop()
    await nc.drain()


def main() -> None:
    run("directory", Settings, serve)


if __name__ == "__main__":
    main()
