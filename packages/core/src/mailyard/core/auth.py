"""Who may call the admin plane: bearer tokens with roles, checked once for gRPC (a server
interceptor) and HTTP (a middleware), and attached by every client (one helper).

Roles:
    admin      every admin call (queue actions, directory and control writes, routes, ...)
    read       read-only calls (stat, list, explain, history, leases, routes, ...): dashboards
    ingress    smtp-ingress: relay checks, Authenticate, CRAM (relay checks also admin/read)
    bridge     the mailbox-access (IMAP/POP3) login bridge: Authenticate, CRAM, lease grants
    relayauth  relay-auth: the directory's UpgradePasswordHash after a login
    listmail   local-delivery: the directory's ConfirmListMember (a list member added or
               removed by mail, only with a cookie the directory checks itself)
Authenticate is a password oracle, so not even admin may call it.

Servers read a token table (TOKENS_FILE: "ROLE TOKEN" per line, # comments; in Kubernetes
and compose a Secret), clients their own token (a file holding one token, or a table whose
line for the wanted role is used). Nothing has a default: a server without a table serves
only on loopback (and logs that it is open); `mailyard up` generates one (mailyard auth
tokens) and the CLI finds it.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from mailyard.core.errors import SettingsError
from mailyard.core.settings import is_loopback

log = logging.getLogger(__name__)
ROLES = ("admin", "read", "ingress", "bridge", "relayauth", "listmail")
MIN_TOKEN = 32
OPEN_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
ADMIN = frozenset({"admin"})
READ = frozenset({"admin", "read"})

# The calls that are not admin-only. Every other method of every service needs `admin`.
_P = "/mailyard."
POLICY: dict[str, frozenset[str]] = {
    **{f"{_P}queue.v1.QueueService/{m}": READ for m in ("Stat", "List", "Explain", "Watch")},
    **{f"{_P}history.v1.History/{m}": READ for m in ("Search", "Follow")},
    # not Routing/Explain: it looks up DNS names the caller chooses and (probe) connects to
    # the hosts they give, a probe of any network the platform reaches, not a look
    **{f"{_P}control.v1.Control/{m}": READ for m in ("Get", "List")},
    **{f"{_P}directory.v1.Directory/{m}": READ for m in (
        "ListDomains", "ListMailboxes", "ListAliases", "ListLists", "GetList", "GetSettings",
        "GetAutoresponse")},
    f"{_P}directory.v1.Directory/Resolve": READ | {"bridge"},
    f"{_P}directory.v1.Directory/UpgradePasswordHash": frozenset({"relayauth"}),
    # not admin either: a confirmation is the subscriber's act, carried by local-delivery
    f"{_P}directory.v1.Directory/ConfirmListMember": frozenset({"listmail"}),
    **{f"{_P}relayauth.v1.RelayAuth/{m}": READ for m in ("ListLeases", "ShowRules")},
    # relay decisions: ingress, and operators asking "who may relay?" (`relay check`)
    **{f"{_P}relayauth.v1.RelayAuth/{m}": READ | {"ingress"} for m in (
        "CheckClient", "CheckClients")},
    **{f"{_P}relayauth.v1.RelayAuth/{m}": frozenset({"ingress", "bridge"}) for m in (
        "Authenticate", "CramChallenge", "CramVerify")},
    f"{_P}relayauth.v1.RelayAuth/GrantLease": frozenset({"admin", "bridge"}),
}


# HTTP GETs that are not a look either (Routing/Explain's twin): admin only, like any write.
ADMIN_GETS = ("/api/routes/explain",)


def allowed(method: str) -> frozenset[str]:
    return POLICY.get(method, ADMIN)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def parse_table(text: str, origin: str = "tokens") -> dict[str, str]:
    """token -> role from "ROLE TOKEN" lines; ValueError naming the bad line."""
    table: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ROLES:
            raise ValueError(f"{origin} line {number}: expected 'ROLE TOKEN' with ROLE one "
                             f"of {', '.join(ROLES)}")
        if len(parts[1]) < MIN_TOKEN or not parts[1].isascii():
            raise ValueError(f"{origin} line {number}: token shorter than {MIN_TOKEN} "
                             "characters (make them with `mailyard auth tokens`)")
        table[parts[1]] = parts[0]
    if not table:
        raise ValueError(f"{origin}: no tokens")
    return table


class Tokens:
    def __init__(self, table: dict[str, str]) -> None:
        self._table = table

    @classmethod
    def load(cls, path: Path) -> Tokens:
        try:
            return cls(parse_table(path.read_text(), str(path)))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SettingsError(f"tokens file: {exc}") from None

    def role(self, token: str) -> str | None:
        found = None
        for known, role in self._table.items():  # compare every entry: no timing hint
            if hmac.compare_digest(known.encode(), token.encode()):
                found = role
        return found

    def check(self, authorization: str, method: str) -> tuple[grpc.StatusCode, str] | None:
        """None when allowed, else (UNAUTHENTICATED | PERMISSION_DENIED, reason)."""
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        role = self.role(token) if token else None
        if role is None:
            return (grpc.StatusCode.UNAUTHENTICATED,
                    "credentials required: authorization: Bearer <token>")
        if role not in allowed(method):
            return grpc.StatusCode.PERMISSION_DENIED, f"role {role} may not call {method}"
        return None


    def check_http(self, authorization: str, method: str,
                   path: str = "") -> tuple[int, str] | None:
        """The same for HTTP: GET needs read (or admin), anything else (and a GET of
        ADMIN_GETS) admin; 401 / 403."""
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        role = self.role(token) if token else None
        if role is None:
            return 401, "credentials required: Authorization: Bearer <token>"
        looks = method == "GET" and not path.startswith(ADMIN_GETS)
        if role not in (READ if looks else ADMIN):
            return 403, f"role {role} may not {method} here"
        return None


def server_tokens(path: Path | None, host: str, what: str) -> Tokens | None:
    """The table to enforce, or None (open) when none is configured, which only a loopback
    listener may be."""
    if path is not None:
        return Tokens.load(path)
    if not is_loopback(host):
        raise SettingsError(f"{what} listens on {host} without TOKENS_FILE: refusing to serve "
                            "the admin plane to anyone who can reach it")
    log.warning("%s: no TOKENS_FILE, admin calls are open to local users", what)
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails],
                                         Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
            details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method
        handler = await continuation(details)
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        metadata = dict(details.invocation_metadata or ())
        refusal = self.tokens.check(str(metadata.get("authorization", "")), method)
        return handler if refusal is None else _refusing(handler, *refusal)


def _refusing(handler: grpc.RpcMethodHandler[Any, Any], code: grpc.StatusCode,
              reason: str) -> grpc.RpcMethodHandler[Any, Any]:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, reason)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, reason)
        yield  # pragma: no cover  (a generator, as the streaming handler must be)

    kinds = {"request_deserializer": handler.request_deserializer,
             "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, **kinds)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, **kinds)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, **kinds)
    return grpc.stream_stream_rpc_method_handler(streaming, **kinds)


# -- clients -------------------------------------------------------------------------------

def read_token(path: Path, role: str = "admin") -> str:
    """A client's token from a file: one token alone, or a table (its `role` line)."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise SettingsError(f"token file {path}: {exc.strerror}") from None
    if len(text.split()) == 1:
        return text
    try:
        table = parse_table(text, str(path))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    for token, has in table.items():
        if has == role:
            return token
    raise SettingsError(f"token file {path}: no {role} token")


def client_token(path: Path | None, role: str) -> str | None:
    """A service's token for its outgoing calls (TOKEN_FILE), None when not configured."""
    return read_token(path, role) if path is not None else None


def metadata(token: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token else []


class _Sync(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
            grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self.extra = metadata(token)

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), *self.extra])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def channel(address: str, token: str | None,
            options: Iterable[tuple[str, Any]] = ()) -> grpc.Channel:
    """A blocking client channel that sends the token with every call (the CLI)."""
    chan = grpc.insecure_channel(address, options=list(options))
    return grpc.intercept_channel(chan, _Sync(token)) if token else chan


class _AioToken:
    def __init__(self, token: str) -> None:
        self.extra = metadata(token)

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=grpc.aio.Metadata(*(details.metadata or ()),
                                                           *self.extra))


# One class per kind of call, not one class for all four: grpc.aio's Channel files each
# interceptor under the FIRST kind it is an instance of (an if/elif chain), so a single
# class implementing all four only ever saw unary-unary calls, and every streaming call
# (CheckClients, Follow, Watch) went out without the token and was refused UNAUTHENTICATED.
class _AioUnaryUnary(_AioToken, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any,
                                    request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioUnaryStream(_AioToken, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any,
                                     request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioStreamUnary(_AioToken, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any,
                                     requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _AioStreamStream(_AioToken, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any,
                                      requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def aio_interceptors(token: str | None) -> list[grpc.aio.ClientInterceptor] | None:
    """The interceptors that send `token` with every kind of call, or None without one."""
    if not token:
        return None
    return [kind(token) for kind in (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary,
                                     _AioStreamStream)]


# Between services a reconnect is a TCP connect to a peer nearby, so try again at least once
# a second. gRPC's default backoff grows to 120 s, and a call on a channel waiting it out
# fails at once without trying: after relay-auth was away a few minutes, logins and relay
# checks kept failing for up to two minutes after it was back (test_grpc_reconnect.py).
RECONNECT = (("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
             ("grpc.max_reconnect_backoff_ms", 1000))


def aio_channel(address: str, token: str | None,
                options: Iterable[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """An asyncio client channel that sends the token with every call (services)."""
    return grpc.aio.insecure_channel(address, options=[*RECONNECT, *options],
                                     interceptors=aio_interceptors(token))


def add_missing_roles(path: Path) -> list[str]:
    """Give a table made by an older release a token for each role it lacks (listmail came
    later: without it local-delivery could not confirm list members); the lines it has stay.
    Returns the roles added."""
    text = path.read_text()
    have = set(parse_table(text, str(path)).values())
    missing = [role for role in ROLES if role not in have]
    if missing:
        with path.open("a") as out:
            out.write("" if text.endswith("\n") else "\n")
            out.writelines(f"{role} {new_token()}\n" for role in missing)
    return missing


def write_table(path: Path, roles: Iterable[str] = ROLES) -> dict[str, str]:
    """A new table (role -> token), written owner-only; for `mailyard up` and the CLI."""
    tokens = {role: new_token() for role in roles}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# mailyard admin-plane tokens: ROLE TOKEN\n")
        out.writelines(f"{role} {token}\n" for role, token in tokens.items())
    return tokens
