"""`python -m mailyard.remote_delivery`: the remote-delivery worker (qmail-rspawn +
qmail-remote) with the Routing gRPC service and /healthz /readyz /metrics."""

from __future__ import annotations

import asyncio

from mailyard.api.routing.v1 import routing_pb2, routing_pb2_grpc
from mailyard.core import bus
from mailyard.core.control import ControlView
from mailyard.core.grpcserver import GrpcServer, grpc_limits, service_name
from mailyard.core.http import HttpServer, app_limits, http_limits, make_app
from mailyard.core.identity import Identity
from mailyard.core.metrics import set_build
from mailyard.core.service import run
from mailyard.core.spool import Spool
from mailyard.remote_delivery import web
from mailyard.remote_delivery.deliver import Deliverer
from mailyard.remote_delivery.explain import RoutingService
from mailyard.remote_delivery.lookup import Lookup
from mailyard.remote_delivery.membership import Membership
from mailyard.remote_delivery.pool import Pool
from mailyard.remote_delivery.settings import Settings
from mailyard.remote_delivery.worker import Worker


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    set_build("remote-delivery")
    nc = await bus.connect(settings.nats_url, f"remote-delivery-{settings.instance}")
    js = nc.jetstream()
    await bus.ensure_mail_streams(js)
    control = ControlView()
    await control.start(js)
    spool = Spool(settings.spool_dir)
    pool = Pool(settings.per_destination_limit, settings.idle_timeout,
                settings.max_messages_per_connection)
    # Counted before the first job, so the per-destination share applies from the start.
    members = Membership(js, settings.instance, ttl=settings.member_ttl,
                         on_change=pool.set_members)
    await members.start()
    deliverer = Deliverer(settings, control, Lookup(settings, Identity(control, settings.me)), pool)
    worker = Worker(settings, js, control, spool, deliverer)
    routing = RoutingService(deliverer)
    grpc_server = GrpcServer(settings.grpc_host, settings.grpc_port, [
        (routing_pb2_grpc.add_RoutingServicer_to_server, routing,
         service_name(routing_pb2, "Routing"))], tokens_file=settings.tokens_file,
        **grpc_limits(settings))
    http = None
    if settings.http_port:
        app = make_app("remote-delivery", {
            "nats": lambda: nc.is_connected, "control": lambda: control.ready,
            "spool": spool.mess.is_dir, "jobs": lambda: worker.consumer.ready},
            tokens_file=settings.tokens_file, host=settings.http_host, **app_limits(settings))
        web.mount(app, routing, control)
        http = HttpServer(app, settings.http_host, settings.http_port, **http_limits(settings))
    await grpc_server.start()
    await worker.start()
    if http:
        await http.start()
    try:
        await stop.wait()
    finally:
        await grpc_server.set_serving(False)
        await worker.stop()
        await members.stop()  # after the transfers in flight: others grow only then
        await pool.close()
        await grpc_server.stop()
        if http:
            await http.stop()
        await control.stop()
        await nc.close()
        spool.close()


def main() -> None:
    run("remote-delivery", Settings, serve)


if __name__ == "__main__":
    main()
