"""gRPC calls in tests: the status a call ends with, for asserting on refusals."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc


async def status_of(call: Awaitable[Any]) -> grpc.StatusCode:
    """OK, or the code of the AioRpcError the call raised (UNAUTHENTICATED, ...)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK
