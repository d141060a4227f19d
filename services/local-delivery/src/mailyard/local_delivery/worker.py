"""The JetStream side: a pull consumer loop on the shared durable "local-delivery".

Every replica binds the same durable consumer, so jobs are shared out by JetStream; the
consumer's max_ack_pending is concurrencylocal, the cluster-wide limit, whatever the number
of replicas. It follows the control file live (qmail-send rereads concurrencylocal on HUP;
we do on every change). The loop is `mailyard.core.consumer.JobConsumer` (shared with
remote-delivery): one job fetched at a time while a slot is free (a batch would hold
max_ack_pending slots in a client buffer), progress acks, and an ack only after the job's
DeliveryResult is in the results stream: a worker killed mid-job loses nothing, JetStream
redelivers after ack_wait.

SIGTERM: stop fetching, let the jobs in flight finish, then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from mailyard.core import bus
from mailyard.core.consumer import JobConsumer
from mailyard.core.control import ControlView
from mailyard.core.directory import DirectoryView
from mailyard.core.http import HttpServer, ReadinessCheck, app_limits, http_limits, make_app
from mailyard.core.identity import Identity
from mailyard.core.metrics import CONCURRENCY_IN_USE, CONCURRENCY_LIMIT, set_build
from mailyard.core.spool import Spool
from mailyard.local_delivery.deliver import Deliverer
from mailyard.local_delivery.settings import Settings

log = logging.getLogger(__name__)

CHANNEL = "local"
DEFAULT_CONCURRENCY = 10
MAX_CONCURRENCY = 1000
FETCH_WAIT = 1.0  # seconds a fetch waits: also how fast a stop is noticed


def concurrency(control: ControlView) -> int:
    value = control.integer("concurrencylocal", DEFAULT_CONCURRENCY)
    return value if 1 <= value <= MAX_CONCURRENCY else DEFAULT_CONCURRENCY


class Worker:
    def __init__(self, settings: Settings, js: JetStreamContext, control: ControlView,
                 deliverer: Deliverer) -> None:
        self.settings = settings
        self.js = js
        self.control = control
        self.deliverer = deliverer
        self.limit = concurrency(control)
        self.consumer = JobConsumer(
            js, CHANNEL, deliverer.run, limit=lambda: self.limit, ack_wait=settings.ack_wait,
            fetch_wait=FETCH_WAIT, sync_ack=True,
            on_in_flight=CONCURRENCY_IN_USE.labels(CHANNEL).set, recreate=self._recreate)
        self._applied = -1
        self._background: set[asyncio.Task[None]] = set()  # limit updates, not jobs
        control.on_change(self._control_changed)

    async def start(self) -> None:
        await self._apply_limit()

    async def _recreate(self) -> None:
        """The stream or the consumer was deleted: both again, with the current limit."""
        await bus.ensure_mail_streams(self.js)
        self._applied = -1
        await self._apply_limit()

    async def _apply_limit(self) -> None:
        limit = concurrency(self.control)
        self.limit = limit
        CONCURRENCY_LIMIT.labels(CHANNEL).set(limit)
        self.consumer.wake()
        if limit == self._applied:
            return
        await bus.ensure_consumer(
            self.js, bus.JOBS_STREAM, bus.JOB_CONSUMER[CHANNEL],
            filter_subject=bus.JOB_SUBJECT[CHANNEL], max_ack_pending=limit,
            ack_wait=self.settings.ack_wait)
        self._applied = limit
        log.info("concurrencylocal applied", extra={"limit": limit})

    def _control_changed(self, key: str, _value: bytes | None) -> None:
        if key == "concurrencylocal":
            task = asyncio.get_running_loop().create_task(self._apply_limit_logged())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _apply_limit_logged(self) -> None:
        try:
            await self._apply_limit()
        except Exception as exc:
            log.warning("could not update max_ack_pending: %s", exc)

    async def run(self, stop: asyncio.Event) -> None:
        """Take jobs until `stop`; then finish what is in flight (each ends with its result
        and ack) and return."""
        await self.consumer.run(stop, grace=None)


def _writable(path: os.PathLike[str]) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    set_build("local-delivery")
    settings.mail_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    spool = Spool(settings.spool_dir)
    nc: NATS = await bus.connect(settings.nats_url, f"local-delivery-{settings.instance}")
    js = nc.jetstream()
    directory, control = DirectoryView(), ControlView()
    deliverer = Deliverer(settings, directory, Identity(control, settings.me), spool, js)
    http: HttpServer | None = None
    try:
        await bus.ensure_mail_streams(js)
        await directory.start(js)
        await control.start(js)
        worker = Worker(settings, js, control, deliverer)
        await worker.start()
        CONCURRENCY_IN_USE.labels(CHANNEL).set(0)
        if settings.http_port:
            checks: dict[str, ReadinessCheck] = {
                "nats": lambda: nc.is_connected,
                "mail_dir": lambda: _writable(settings.mail_dir),
                "directory": lambda: directory.ready,
                "jobs": lambda: worker.consumer.ready,  # its consumer exists
            }
            http = HttpServer(make_app("local-delivery", checks, **app_limits(settings)),
                              settings.http_host, settings.http_port, **http_limits(settings))
            await http.start()
        log.info("local delivery ready", extra={"mail_dir": str(settings.mail_dir),
                                                "concurrency": worker.limit})
        await worker.run(stop)
    finally:
        if http:
            await http.stop()
        await directory.stop()
        await control.stop()
        with contextlib.suppress(Exception):
            await nc.drain()
        with contextlib.suppress(Exception):
            await deliverer.subscriptions.close()
        deliverer.close()
        spool.close()
