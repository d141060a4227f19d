"""The listeners (25/587/465 style), the shared state sessions read (control files,
directory, relay-auth, spool, JetStream), readiness, and the graceful stop.

NATS may be down when we start or go away later: the SMTP ports listen regardless, the
connection is retried in the background, and until it works every DATA gets 451 4.3.0 and
/readyz says not ready. Nothing needs a restart to recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from typing import Any

from mailyard.core import bus
from mailyard.core.addresses import to_ascii_domain
from mailyard.core.auth import client_token
from mailyard.core.control import ControlView
from mailyard.core.directory import DirectoryView
from mailyard.core.dkim_sign import Signer
from mailyard.core.http import HttpServer, app_limits, http_limits, make_app
from mailyard.core.identity import Identity
from mailyard.core.metrics import set_build
from mailyard.core.spool import Spool
from mailyard.core.srs_keys import SrsSecrets
from mailyard.smtp_ingress import policy, proxy_protocol, replies
from mailyard.smtp_ingress.arc_verify import ArcVerifier
from mailyard.smtp_ingress.authdns import AuthDns
from mailyard.smtp_ingress.dnsbl import Dns
from mailyard.smtp_ingress.greylist import Greylist
from mailyard.smtp_ingress.limits import ConnectionLimits
from mailyard.smtp_ingress.message_body import Budget
from mailyard.smtp_ingress.metrics import CONNECTIONS, REJECTIONS, SESSIONS_ACTIVE
from mailyard.smtp_ingress.relay import RelayAuthClient
from mailyard.smtp_ingress.relay_view import RelayView
from mailyard.smtp_ingress.resolver import Resolver
from mailyard.smtp_ingress.rspamd import RspamdClient
from mailyard.smtp_ingress.session import Session
from mailyard.smtp_ingress.settings import Settings
from mailyard.smtp_ingress.spf_check import SpfChecker
from mailyard.smtp_ingress.tls import HANDSHAKE_TIMEOUT, server_context

log = logging.getLogger(__name__)
DEFAULT_DATABYTES = 10485760


def _a_label(line: str) -> str:
    """An rcpthosts name as an A-label, keeping the leading "." of a suffix."""
    return "." + to_ascii_domain(line[1:]) if line.startswith(".") else to_ascii_domain(line)


@dataclass(frozen=True)
class Listener:
    name: str               # metric label: smtp | submission | smtps
    port: int
    implicit_tls: bool = False
    require_auth: bool = False
    proxy: bool = False     # PROXY protocol from PROXY_FROM (proxy_protocol.py)


class Ingress:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proxy_networks = settings.proxy_networks()
        self.spool = Spool(settings.spool_dir)
        self.data_budget = Budget(settings.data_memory_total)  # what DATA holds in RAM
        self.control = ControlView()
        self.identity = Identity(self.control, settings.me)  # control/me, hot
        self.directory = DirectoryView()
        self.relay_view = RelayView(self.control)  # tcp.smtp + leases: decisions from memory
        self.relay = RelayAuthClient(settings.relay_auth_addr, settings.relay_auth_timeout,
                                     settings.relay_auth_in_flight,
                                     auth_timeout=settings.relay_auth_auth_timeout,
                                     view=self.relay_view,
                                     token=client_token(settings.token_file, "ingress"))
        # one DNS resolver and its cache for the PTR, DNSBL and sender-check lookups
        self.resolver = Resolver(settings.dns_nameservers(), settings.auth_dns_timeout)
        self.dnsbl = Dns(settings, self.control, self.resolver)
        self.signer = Signer(settings.dkim_dir) if settings.dkim_dir else None
        self.authdns = AuthDns(self.resolver, settings.auth_dns_timeout) \
            if settings.sender_auth else None
        self.arc = ArcVerifier(self.authdns) if self.authdns else None
        self.greylist = Greylist()
        self.srs_secrets: SrsSecrets | None = None  # with the bus (srs_rcpt)
        self.rspamd = RspamdClient(settings.rspamd_timeout)
        self.spf = SpfChecker(self.authdns) if self.authdns is not None else None
        self.tls_context: ssl.SSLContext | None = server_context(
            settings.tls_cert, settings.tls_key, settings.tls_dir, self.me())
        self.limits = ConnectionLimits(settings.max_connections, settings.max_per_ip)
        self.nc: Any = None
        self.js: Any = None
        self.ports: dict[str, int] = {}
        # each listener's counter and gauge, looked up once: labels() per connection was
        # 3 % of a connection's cost
        self.listener_metrics: dict[str, tuple[Any, Any]] = {}
        self.servers: list[asyncio.Server] = []
        self.sessions: dict[asyncio.Task[Any], Session | None] = {}
        self._connector: asyncio.Task[None] | None = None
        self._confirmer: asyncio.Task[None] | None = None
        self._rcpthosts: tuple[str, frozenset[str], tuple[str, ...]] = ("", frozenset(), ())

    # -- what sessions read ----------------------------------------------------------------

    def me(self) -> str:
        """qmail's control/me: our name in the greeting, Received: lines and the bare
        postmaster's domain, from control/me (hot) through mailyard.core.identity."""
        return self.identity.me

    def policy_word(self, name: str, default: str) -> str:
        """The first word of a policy control file (spfpolicy, dmarcpolicy), lower case."""
        values = self.control.lines(name)
        return values[0].split()[0].lower() if values else default

    def databytes(self) -> int:
        return self.control.integer("databytes", DEFAULT_DATABYTES)

    def in_rcpthosts(self, domain: str) -> bool:
        """control/rcpthosts: "example.com" exactly, ".example.com" any subdomain. Names are
        compared as A-labels, as the directory keeps domains: an IDN arrives in either form
        (UTF-8 from SMTPUTF8 clients) and may be listed in either."""
        text = self.control.text("rcpthosts")
        if text != self._rcpthosts[0]:
            lines = [_a_label(line.rstrip(".")) for line in self.control.lines("rcpthosts")]
            self._rcpthosts = (text, frozenset(x for x in lines if not x.startswith(".")),
                               tuple(x for x in lines if x.startswith(".")))
        _, exact, suffixes = self._rcpthosts
        if not domain.isascii():  # ASCII, nearly every name, is lowered already
            domain = to_ascii_domain(domain)
        return domain in exact or (bool(suffixes) and domain.endswith(suffixes))

    def bus_ready(self) -> bool:
        return self.js is not None and self.nc is not None and self.nc.is_connected

    def views_ready(self) -> bool:
        return self.control.ready and self.directory.ready

    def spool_writable(self) -> bool:
        probe = self.spool.tmp / f".probe.{os.getpid()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            os.unlink(probe)
            return True
        except OSError:
            return False

    def spool_has_room(self, size: int = 0) -> bool:
        """Free space for one more message of `size` bytes above the reserve (see
        Settings.spool_min_free). Asked at every MAIL: statvfs is one cheap syscall, and
        the answer follows the disk as it fills and empties, no restart needed."""
        need = max(self.settings.spool_min_free, self.databytes() * 3 // 2) + size
        try:
            st = os.statvfs(self.spool.root)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize >= need

    def ready(self) -> bool:
        return self.bus_ready() and self.views_ready() and self.spool_writable() \
            and self.spool_has_room()

    # -- lifecycle -------------------------------------------------------------------------

    def listeners(self) -> list[Listener]:
        st = self.settings
        proxied = set(st.proxy_protocol.replace(" ", "").split(",")) - {""}
        wanted = [Listener("smtp", st.smtp_port, proxy="smtp" in proxied),
                  Listener("submission", st.submission_port, require_auth=True,
                           proxy="submission" in proxied),
                  Listener("smtps", st.smtps_port, implicit_tls=True, require_auth=True)]
        return [x for x in wanted if x.port]

    async def start(self) -> None:
        with contextlib.suppress(OSError):
            self.spool.ensure()
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, self.spool.reserve, self.settings.spool_reserve)
        except OSError as exc:  # only a cost: commits make their files as they go
            log.warning("spool reserve not made: %s", exc.strerror or exc)
        for phase in ("mail", "rcpt", "data"):  # imported now, not by the first message:
            for name in self.settings.checks(phase):  # DMARC's public suffix list alone
                policy.load(name)                      # takes ~100 ms to build
        for listener in self.listeners():
            self.listener_metrics[listener.name] = (CONNECTIONS.labels(listener.name),
                                                    SESSIONS_ACTIVE.labels(listener.name))
            server = await asyncio.start_server(
                functools.partial(self._handle, listener),
                self.settings.smtp_host, listener.port, backlog=self.settings.listen_backlog,
                reuse_port=self.settings.reuse_port or None,
                # 465's handshake stays the listener's (its failures go unreported, unlike
                # STARTTLS's): a handler starting TLS itself would be too late on uvloop,
                # whose first read can take the ClientHello into the plain stream's buffer
                ssl=self.tls_context if listener.implicit_tls else None,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT if listener.implicit_tls else None)
            self.servers.append(server)
            self.ports[listener.name] = server.sockets[0].getsockname()[1]
        self._connector = asyncio.create_task(self._connect(), name="nats-connect")
        log.info("listening", extra={"ports": self.ports})

    async def _connect(self) -> None:
        """Connect to NATS and load the control / directory views, retrying forever."""
        while True:
            try:
                if self.nc is None:
                    self.nc = await bus.connect(self.settings.nats_url,
                                                f"smtp-ingress-{self.settings.instance}")
                js = self.nc.jetstream()
                await bus.ensure_mail_streams(js)
                for view in (self.control, self.directory):
                    if not view.ready:
                        await view.start(js)
                if not self.relay_view.leases.ready:
                    await self.relay_view.start(js)
                    self._confirmer = asyncio.create_task(self.relay.confirm_view(),
                                                          name="relay-view-confirm")
                if self.greylist.kv is None:
                    await self.greylist.start(js)
                self.srs_secrets = SrsSecrets(js)
                self.js = js
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("NATS not available yet: %s", exc)
                await asyncio.sleep(1.0)

    async def _handle(self, listener: Listener, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        ip = str(peer[0])
        connections, active = self.listener_metrics[listener.name]
        connections.inc()
        client: tuple[str, int] | None = None
        early = b""
        if listener.proxy and self._from_proxy(ip):
            try:
                header, early = await proxy_protocol.read_header(
                    reader, self.settings.proxy_timeout)
            except (proxy_protocol.ProxyError, TimeoutError) as exc:
                # the spec: a receiver closes a connection without a valid header, unanswered
                REJECTIONS.labels("proxy_protocol").inc()
                log.warning("connection from a proxy without a valid PROXY header: %s", exc,
                            extra={"client_ip": ip})
                writer.close()
                return
            if header.client is not None:
                client = header.client
                ip = client[0]
        if not self.limits.acquire():
            REJECTIONS.labels("too_many_connections").inc()
            with contextlib.suppress(Exception):
                writer.write(replies.TOO_MANY_CONNECTIONS.encode() + b"\r\n")
                await writer.drain()
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        session = Session(self, listener, reader, writer, client, early)
        self.sessions[task] = session
        active.inc()
        try:
            await session.run()
        finally:
            active.dec()
            self.limits.release(ip, session.admitted)
            self.sessions.pop(task, None)
        await session.wait_closed()

    def _from_proxy(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        address = getattr(address, "ipv4_mapped", None) or address
        return any(address in net for net in self.proxy_networks)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, tell idle clients 421, let commits in flight finish."""
        for server in self.servers:
            server.close()
        for task, session in list(self.sessions.items()):
            if session is None or not session.committing:
                task.cancel()
        if self.sessions:
            await asyncio.wait(list(self.sessions), timeout=grace)
        if self._connector:
            self._connector.cancel()
        for view in (self.control, self.directory):
            await view.stop()
        if self._confirmer is not None:
            self._confirmer.cancel()
        self.greylist.close()
        await self.relay_view.stop()
        await self.relay.close()
        if self.arc is not None:
            self.arc.close()
        await self.rspamd.close()
        await self.resolver.close()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        self.spool.close()


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    set_build("smtp-ingress")
    ingress = Ingress(settings)
    await ingress.start()
    http = None
    if settings.http_port:
        http = HttpServer(make_app("smtp-ingress", {
            "nats": ingress.bus_ready, "views": ingress.views_ready,
            "spool": ingress.spool_writable, "spool_space": ingress.spool_has_room},
            **app_limits(settings)), settings.http_host, settings.http_port,
            **http_limits(settings))
        await http.start()
    await stop.wait()
    await ingress.stop()
    if http is not None:
        await http.stop()
