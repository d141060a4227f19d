"""`python -m mailyard.mail_access`: Dovecot's login bridge (dict socket + /healthz /readyz
/metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from mailyard.api.relayauth.v1 import relayauth_pb2_grpc as rpc
from mailyard.core import auth, bus
from mailyard.core.directory import DirectoryView
from mailyard.core.http import HttpServer, app_limits, http_limits, make_app
from mailyard.core.metrics import set_build
from mailyard.core.service import run
from mailyard.mail_access.bridge import Bridge
from mailyard.mail_access.dictserver import DictServer
from mailyard.mail_access.settings import Settings

log = logging.getLogger("mailyard.mail_access")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    set_build("mail-access")
    nc = await bus.connect(settings.nats_url, f"mail-access-{settings.instance}")
    directory = DirectoryView()
    await directory.start(nc.jetstream())
    # role bridge: Authenticate and GrantLease (mailyard.core.auth)
    channel = auth.aio_channel(settings.relay_auth_addr,
                               auth.client_token(settings.token_file, "bridge"))
    token = settings.relay_auth_token.get_secret_value() if settings.relay_auth_token else None
    bridge = Bridge(directory, rpc.RelayAuthStub(channel),
                    settings.mail_dir, settings.relay_auth_timeout, token)
    server = DictServer(settings.auth_socket, bridge.answer, settings.auth_socket_owner)
    await server.start()
    http: HttpServer | None = None
    if settings.http_port:
        app = make_app("mail-access", {
            "nats": lambda: nc.is_connected,
            "directory": lambda: directory.ready,
            # Connected to relay-auth (asking connects it): without it no login can succeed.
            "relay-auth": lambda: channel.get_state(try_to_connect=True)
            == grpc.ChannelConnectivity.READY,
        }, **app_limits(settings))
        http = HttpServer(app, settings.http_host, settings.http_port, **http_limits(settings))
        await http.start()
    log.info("listening", extra={"socket": str(settings.auth_socket)})
    await stop.wait()
    await server.stop()
    if http:
        await http.stop()
    await channel.close()
    await directory.stop()
    with contextlib.suppress(Exception):
        await nc.drain()


def main() -> None:
    run("mail-access", Settings, serve)


if __name__ == "__main__":
    main()
