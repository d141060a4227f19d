"""What one client of the admin plane (HTTP and gRPC) may ask of a service.

The largest request either plane takes is a control file or a tcp.smtp (one KV message,
at most nats-server's max_payload: 1 MiB by default) or a list's members, so a request
body may be as large as a gRPC message by default (4 MiB), and no larger.
"""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 4 * 1024 * 1024


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
