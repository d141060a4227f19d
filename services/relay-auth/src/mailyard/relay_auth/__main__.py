"""`python -m mailyard.relay_auth`: the relay-auth service (gRPC + /healthz /readyz /metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.api.relayauth.v1 import relayauth_pb2_grpc as rpc
from mailyard.core import bus
from mailyard.core.auth import client_token
from mailyard.core.control import ControlView
from mailyard.core.directory import DirectoryView
from mailyard.core.grpcserver import GrpcServer, grpc_limits, service_name
from mailyard.core.http import HttpServer, app_limits, http_limits, make_app
from mailyard.core.metrics import set_build
from mailyard.core.service import run
from mailyard.relay_auth import web
from mailyard.relay_auth.auth import Authenticator
from mailyard.relay_auth.leases import LeaseStore
from mailyard.relay_auth.login_cache import LoginCache
from mailyard.relay_auth.pool import PasswordPool
from mailyard.relay_auth.server import RelayAuthServicer
from mailyard.relay_auth.settings import Settings
from mailyard.relay_auth.throttle import Throttle
from mailyard.relay_auth.upgrade import HashUpgrader

log = logging.getLogger("mailyard.relay_auth")


async def _housekeeping(throttle: Throttle, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        throttle.forget_expired()


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    set_build("relay-auth")
    nc = await bus.connect(settings.nats_url, f"relay-auth-{settings.instance}")
    js = nc.jetstream()
    control, directory = ControlView(), DirectoryView()
    leases = LeaseStore(settings.lease_ttl, settings.lease_purge_interval)
    throttle = Throttle(settings.auth_fail_limit_ip, settings.auth_fail_limit_user,
                        settings.auth_fail_window, limit_pair=settings.auth_fail_limit_pair,
                        delay_base=settings.auth_delay_base, delay_max=settings.auth_delay_max)
    pool = PasswordPool(settings.auth_workers, settings.auth_queue)
    upgrader = HashUpgrader(settings.directory_addr, settings.directory_timeout, pool,
                            client_token(settings.token_file, "relayauth"))
    auth = Authenticator(directory, throttle, settings.cram_ttl, pool, upgrader,
                         LoginCache(settings.auth_cache_ttl, settings.auth_cache_size),
                         settings.login_separators, control, settings.cram_max_challenges)
    await control.start(js)
    await directory.start(js)
    await throttle.start(js)
    await auth.start(js)
    await leases.start(js)
    servicer = RelayAuthServicer(settings.default_rules, control, leases, throttle, auth,
                                 directory)
    grpc_server = GrpcServer(settings.grpc_host, settings.grpc_port, [
        (rpc.add_RelayAuthServicer_to_server, servicer, service_name(pb, "RelayAuth"))],
        tokens_file=settings.tokens_file, **grpc_limits(settings))
    await grpc_server.start()
    http: HttpServer | None = None
    if settings.http_port:
        app = make_app("relay-auth", {
            "nats": lambda: nc.is_connected,
            "views": lambda: control.ready and directory.ready and leases.view.ready,
        }, tokens_file=settings.tokens_file, host=settings.http_host, **app_limits(settings))
        web.mount(app, servicer)
        http = HttpServer(app, settings.http_host, settings.http_port, **http_limits(settings))
        await http.start()
    chores = asyncio.create_task(_housekeeping(throttle, min(60.0, settings.auth_fail_window)))
    log.info("listening", extra={"grpc_port": grpc_server.port, "rules": servicer.rules.version,
                                 "leases": leases.active_count()})
    await stop.wait()
    servicer.end_streams()
    await grpc_server.stop()
    chores.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await chores
    if http:
        await http.stop()
    await upgrader.close()
    pool.close()
    await leases.stop()
    await throttle.stop()
    await directory.stop()
    await control.stop()
    with contextlib.suppress(Exception):
        await nc.drain()


def main() -> None:
    run("relay-auth", Settings, serve)


if __name__ == "__main__":
    main()
