"""What one client of the admin plane (HTTP and gRPC) may ask of a service.

The largest request either plane takes is a control file or a tcp.smtp (one KV message,
at most nats-server's max_payload: 1 MiB by default) or a list's members, so a request
body may be as large as a gRPC message by default (4 MiB), and no larger.

uvicorn bounds neither the number of connections nor the time a client takes to send its
request (it times only a kept-alive connection on which nothing more arrives): here past
MAX_CONNECTIONS a request gets 503, a request (headers and body) that has not arrived
within REQUEST_TIMEOUT gets 408 and its connection is closed, and a connection on which
nothing could be sent for REQUEST_TIMEOUT is aborted. Prometheus, the probes and an
operator's scripts need a handful of connections, send a request at once and read.

These are the defaults: every service takes its own from its settings (ADMIN_MAX_BODY,
HTTP_MAX_CONNECTIONS, HTTP_REQUEST_TIMEOUT, GRPC_MAX_RPCS, GRPC_MAX_IDLE; core.settings).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from mailyard.core import settings

log = logging.getLogger(__name__)

MAX_BODY = settings.ADMIN_MAX_BODY
MAX_CONNECTIONS = settings.HTTP_MAX_CONNECTIONS  # connections (or requests) at once
REQUEST_TIMEOUT = settings.HTTP_REQUEST_TIMEOUT  # to send a request, or take part of an answer
# gRPC calls at once, per server: grpc.aio held every call of a flood (a task and its
# buffers, ~20 KB; a queue Watch also a NATS subscription and up to 10,000 events). An
# ingress holds at most 64 relay checks and 256 AUTH calls (relay-auth refuses AUTH past
# its pool's queue at once), so even dozens of replicas stay far below.
MAX_RPCS = settings.GRPC_MAX_RPCS
# Seconds a gRPC connection with no call stays open (the client connects again on its next
# call): an idle HTTP/2 connection costs ~14 KB and a descriptor, and was kept for ever.
MAX_IDLE = settings.GRPC_MAX_IDLE


class BodyLimit:
    """ASGI middleware: a request body past MAX_BODY is a 413 with a JSON reason. Before
    anything is read when Content-Length says so, else once the count passes the limit
    (FastAPI read the whole body into memory before any check of its size)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"the request body is larger than {self.limit} bytes"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:  # h11 refuses any other
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, detail)  # FastAPI answers it as JSON
            return message

        await self.app(scope, counted, send)


class TimedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with REQUEST_TIMEOUT: a client sending a header line (or
    a byte of body) now and then held its connection, and a share of MAX_CONNECTIONS, for
    ever (slowloris). And MAX_CONNECTIONS itself, in place of uvicorn's limit_concurrency
    (left unset): the same test, but the 503 past it is JSON like every other error of the
    admin API (uvicorn's is text/plain, from a function it names in its own module).
    HttpServer makes a subclass with its own request_timeout and max_connections."""

    request_timeout = REQUEST_TIMEOUT
    max_connections = MAX_CONNECTIONS
    _late: asyncio.TimerHandle | None = None
    _stalled: asyncio.TimerHandle | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app = self.app

    def handle_events(self) -> None:
        # uvicorn's limit_concurrency test, made once per read instead of per request: the
        # requests of one read (pipelined) are answered alike, as they were by uvicorn when
        # a task ended between them (it counts the connections and the requests running)
        limit = self.max_connections
        busy = len(self.connections) >= limit or len(self.tasks) >= limit
        self.app = self._over_limit if busy else self._app
        super().handle_events()

    async def _over_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        log.warning("HTTP: %d connections at once, the most allowed; answered 503",
                    self.max_connections)
        detail = (f"this service serves at most {self.max_connections} HTTP connections at "
                  "once; try again shortly")
        await JSONResponse({"detail": detail}, status_code=503,
                           headers={"connection": "close"})(scope, receive, send)

    def send_400_response(self, msg: str) -> None:
        # what h11 cannot parse: uvicorn's answer is text/plain, the API's errors are JSON
        body = json.dumps({"detail": "not an HTTP/1.1 request this server can read "
                                     f"({msg.rstrip('.')})"}).encode()
        event = h11.Response(status_code=400, reason=b"Bad Request", headers=[
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
            (b"connection", b"close")])
        for part in (event, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(part) or b"")
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._time_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._time_request()  # the next request on a kept connection has the same time

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for timer in (self._late, self._stalled):
            if timer is not None:
                timer.cancel()

    # A client that takes none of its answer for request_timeout is cut off: the rest
    # waited in our buffer for as long as it kept its window shut (closing waits for it
    # too), holding the connection, the request's task and the answer.
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            self._stalled = self.loop.call_later(self.request_timeout, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _time_request(self) -> None:
        if self._late is not None:
            self._late.cancel()
        if not self.transport.is_closing():
            self._late = self.loop.call_later(self.request_timeout, self._request_late)

    def _request_late(self) -> None:
        # Only a request still arriving is late: one being answered is the app's business.
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE,
                                                                          h11.SEND_BODY):
            return
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # nothing answered yet
            body = json.dumps({"detail": "the request did not arrive within "
                                         f"{self.request_timeout:g} s"}).encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\n"
                                 b"content-type: application/json\r\nconnection: close\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(body), body))
        self.transport.close()
