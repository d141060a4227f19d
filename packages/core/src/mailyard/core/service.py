"""Process lifecycle shared by every service: settings, logs, signals, graceful stop.

    def main() -> None:
        run("queue", QueueSettings, serve)

    async def serve(settings: QueueSettings, stop: asyncio.Event) -> None:
        ... start listeners ...
        await stop.wait()          # SIGTERM or SIGINT
        ... stop accepting, finish what is in flight ...
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvloop

from mailyard.core import bus, heap, logs, tls_buffers
from mailyard.core.errors import SettingsError
from mailyard.core.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)
log = logging.getLogger(__name__)
# A graceful stop may take this long; then the process ends anyway. A stop waiting forever
# on something that is gone (nats-server killed with its supervisor) left services running
# unsupervised after `mailyard up` was killed. Ending here loses nothing: every state is
# safe against kill -9.
STOP_GRACE = float(os.environ.get("MAILYARD_STOP_GRACE", "30"))


def _overdue() -> None:
    log.error("graceful stop took more than %.0f s; exiting now", STOP_GRACE)
    logging.shutdown()
    os._exit(1)


def run(service: str, settings_cls: type[S],
        serve: Callable[[S, asyncio.Event], Awaitable[None]]) -> None:
    try:
        settings = settings_cls.load()
    except SettingsError as exc:
        print(f"mailyard-{service}: refusing to start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.setup(service, settings.log_level)
    bus.set_replicas(settings.nats_replicas)
    heap.keep_freed_buffers()
    # Everything imported so far (grpc, protobuf, pydantic, fastapi: a few hundred thousand
    # objects) lives as long as the process; frozen, a full collection no longer walks it,
    # which is what shows up as the tail of request latencies.
    gc.freeze()
    main = _main(service, settings, serve)
    if settings.event_loop == "uvloop":
        uvloop.run(main)
    else:
        tls_buffers.lean()  # asyncio's TLS layer only; uvloop's has its own buffers
        asyncio.run(main)


async def _main(service: str, settings: S,
                serve: Callable[[S, asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop_requested() -> None:
        if not stop.is_set():
            stop.set()
            watchdog = threading.Timer(STOP_GRACE, _overdue)  # a thread: fires even if
            watchdog.daemon = True                            # the event loop is stuck
            watchdog.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested)
    log.info("starting", extra={"instance": settings.instance,
                                 "event_loop": type(loop).__module__.split(".")[0]})
    try:
        await serve(settings, stop)
    except SettingsError as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(2) from None
    log.info("stopped")
