"""/healthz, /readyz and /metrics for every service (FastAPI), served beside its real work.

/healthz: the process runs. /readyz: every readiness check passes (NATS connected, spool
writable, ...), so a load balancer stops sending work to a replica that cannot commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import grpc
import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.protobuf.json_format import MessageToDict
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from mailyard.core import auth
from mailyard.core.limits import (
    MAX_BODY,
    MAX_CONNECTIONS,
    REQUEST_TIMEOUT,
    BodyLimit,
    TimedH11,
)
from mailyard.core.settings import ServiceSettings, is_loopback

ReadinessCheck = Callable[[], Awaitable[bool] | bool]
log = logging.getLogger(__name__)


def make_app(service: str, checks: dict[str, ReadinessCheck] | None = None,
             registry: CollectorRegistry = REGISTRY, *, tokens_file: Path | None = None,
             host: str = "127.0.0.1", max_body: int = MAX_BODY) -> FastAPI:
    """/healthz /readyz /metrics open; the admin API under /api/ needs a token (GET: role
    read or admin, anything else: admin) once TOKENS_FILE is set, and without one is served
    on loopback only. The OpenAPI page is /docs."""
    app = FastAPI(title=f"mailyard {service}", docs_url="/docs", redoc_url=None)
    checks = checks or {}
    tokens = auth.Tokens.load(tokens_file) if tokens_file is not None else None
    local_only = tokens is None and not is_loopback(host)
    # inside admin_api: a client without a token gets 401
    app.add_middleware(BodyLimit, limit=max_body)

    @app.middleware("http")
    async def admin_api(request: Request,
                        call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not request.url.path.startswith("/api/"):
            return await call_next(request)
        if local_only:
            return JSONResponse({"detail": "no TOKENS_FILE: the admin API is off on "
                                           f"{host}"}, status_code=403)
        if tokens is not None:
            method = "GET" if request.method in ("GET", "HEAD") else "POST"
            refusal = tokens.check_http(request.headers.get("authorization", ""), method,
                                        request.url.path)
            if refusal is not None:
                status, detail = refusal
                headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                return JSONResponse({"detail": detail}, status_code=status, headers=headers)
        params = request.query_params
        if len(params.multi_items()) != len(params):
            # FastAPI takes the last of a repeated parameter (?limit=5&limit=100000): which
            # one the client meant is a guess, so it is bad input, like any other
            seen: set[str] = set()
            for twice, _ in params.multi_items():
                if twice in seen:
                    break
                seen.add(twice)
            return JSONResponse({"detail": f"query parameter {twice!r} given more than once"},
                                status_code=400)
        return await call_next(request)

    @app.exception_handler(UnicodeEncodeError)
    async def lone_surrogate(request: Request, exc: UnicodeEncodeError) -> Response:
        # JSON may escape a lone surrogate ("\ud800"), which no UTF-8 text holds: the route
        # fails making its protobuf request; that is the body's fault, not a 500
        if exc.reason != "surrogates not allowed":
            raise exc
        return JSONResponse({"detail": "a string holds a lone surrogate "
                                       f"{exc.object[exc.start:exc.end]!r}, not Unicode text"},
                            status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's 422 without the `input` each error echoes: a password one character
        # too long came back in the answer, and into whatever logs the answers. (That also
        # keeps out a NaN or an infinity, which Python's JSON parser takes and JSON cannot
        # say; _finite still covers one in `ctx`.)
        errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
        return JSONResponse({"detail": _finite(jsonable_encoder(errors))}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> Response:
        # a bug: Starlette still logs the traceback; the client gets the API's JSON, not
        # text/plain, and no detail of the internals
        return JSONResponse({"detail": "internal error (logged by the service)"},
                            status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz")
    async def readyz(response: Response) -> dict[str, object]:
        results: dict[str, bool] = {}
        for name, check in checks.items():
            try:
                outcome = check()
                results[name] = bool(await outcome) if asyncio.iscoroutine(outcome) else bool(
                    outcome)
            except Exception:
                results[name] = False
        ready = all(results.values())
        response.status_code = 200 if ready else 503
        return {"ready": ready, "checks": results}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinity in it as a string ("nan", "inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


_HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
                grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.FAILED_PRECONDITION: 409,
                grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNAVAILABLE: 503,
                grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.UNAUTHENTICATED: 401}


class HttpContext:
    """Lets a gRPC servicer method answer an HTTP request of the same service (one code
    path for both): its context.abort() becomes the matching HTTP error."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise HTTPException(_HTTP_STATUS.get(code, 500), details)


def http_context() -> Any:
    """An HttpContext where a servicer method expects its gRPC context (duck-typed)."""
    return HttpContext()


def to_json(message: Any) -> dict[str, Any]:
    """A protobuf answer as the JSON the HTTP API returns (field names as in the .proto)."""
    return dict(MessageToDict(message, preserving_proto_field_name=True,
                              always_print_fields_with_no_presence=True))


# A listing's query parameters (mailyard.core.paging): ?limit= records a page (0 or none:
# 1,000, past 1,000: 1,000; past int32 FastAPI's 422, as protobuf could not hold it) and
# ?page_token= from the previous page.
Limit = Annotated[int, Query(ge=0, le=2**31 - 1, description="records a page (at most 1000)")]
PageToken = Annotated[str, Query(description="next_page_token of the previous page")]


def to_json_page(message: Any, request: Request) -> dict[str, Any]:
    """A page of a listing as JSON, with "next": the path of the next page (null after the
    last), so a client follows links instead of building them."""
    page = to_json(message)
    token = page.get("next_page_token")
    url = request.url.include_query_params(page_token=token)
    page["next"] = f"{url.path}?{url.query}" if token else None
    return page


def app_limits(settings: ServiceSettings) -> dict[str, Any]:
    """make_app's bounds as a service's settings have them (ADMIN_MAX_BODY)."""
    return {"max_body": settings.admin_max_body}


def http_limits(settings: ServiceSettings) -> dict[str, Any]:
    """HttpServer's bounds as a service's settings have them (HTTP_MAX_CONNECTIONS, ...)."""
    return {"max_connections": settings.http_max_connections,
            "request_timeout": settings.http_request_timeout}


class _QuietServer(uvicorn.Server):
    """The service owns SIGTERM/SIGINT (graceful stop); uvicorn must not take them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """uvicorn inside the service's own event loop, stopped with the service."""

    def __init__(self, app: FastAPI, host: str, port: int, *,
                 max_connections: int = MAX_CONNECTIONS,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        protocol = type("TimedH11", (TimedH11,), {"request_timeout": request_timeout,
                                                   "max_connections": max_connections})
        # no limit_concurrency: TimedH11 applies max_connections (its 503 is JSON)
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                lifespan="off", http=protocol)
        self.server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Raises OSError (e.g. the port is taken) before anything runs. uvicorn would
        report a failed bind with sys.exit() inside its task, which leaves this process
        running half-started (seen: a queue alive for an hour without its HTTP port)."""
        config = self.server.config
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((config.host, config.port))
        except OSError:
            sock.close()
            raise
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        servers = getattr(self.server, "servers", [])
        for srv in servers:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        return 0

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
