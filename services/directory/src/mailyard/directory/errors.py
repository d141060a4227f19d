"""Refusals the directory answers with a gRPC status (typed, no message parsing)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from mailyard.core.errors import BusError, MailyardError, status_details

T = TypeVar("T")


class Refused(MailyardError):
    """A request the directory will not carry out, with the status code to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        message = status_details(message)  # it quotes what was sent
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> Refused:
    return Refused(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> Refused:
    return Refused(grpc.StatusCode.NOT_FOUND, message)


def exists(message: str) -> Refused:
    return Refused(grpc.StatusCode.ALREADY_EXISTS, message)


def precondition(message: str) -> Refused:
    return Refused(grpc.StatusCode.FAILED_PRECONDITION, message)


def denied(message: str) -> Refused:
    return Refused(grpc.StatusCode.PERMISSION_DENIED, message)


def rpc(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Turn a Refused raised by a servicer method into the matching gRPC status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except Refused as exc:
            await context.abort(exc.code, exc.message)
            raise  # abort raises; this line keeps type checkers content
        except BusError as exc:  # NATS unreachable or slow: the caller may try again
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise

    return wrapper
