"""The queue's shared parts, handed to every component (one object, no globals)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ServiceUnavailableError

from mailyard.api.queue.v1 import queue_pb2
from mailyard.core import bus
from mailyard.core.batch_pull import BatchPull, pull
from mailyard.core.control import ControlView
from mailyard.core.directory import DirectoryView
from mailyard.core.identity import Identity
from mailyard.core.spool import Spool
from mailyard.queue.history import Recorder
from mailyard.queue.settings import Settings
from mailyard.queue.state import Store

log = logging.getLogger(__name__)


def enum(value: int) -> Any:
    """A protobuf enum field value from a plain int (the stubs want their NewType)."""
    return value

DEFAULT_LIFETIME = 604800


@dataclass
class Queue:
    settings: Settings
    nc: NATS
    js: JetStreamContext
    spool: Spool
    store: Store
    control: ControlView
    directory: DirectoryView
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # due work may exist now
    owed: asyncio.Event = field(default_factory=asyncio.Event)  # a bounce not injected yet
    # One settle at a time: two (results and the reconciler's sweep) could both inject the
    # same bounce id, and when the second publish failed its withdrawal removed the file of
    # the bounce the first had queued (a lost bounce, seen as a flaky test under load).
    settling: asyncio.Lock = field(default_factory=asyncio.Lock)
    not_preprocessed: int = 0
    consuming: dict[str, bool] = field(default_factory=dict)  # durable -> its consumer works
    identity: Identity = field(init=False)  # me and postmaster, hot from control/
    history: Recorder = field(init=False)   # qmail's log, kept in MAIL_HISTORY

    def __post_init__(self) -> None:
        self.identity = Identity(self.control, self.settings.me)
        self.history = Recorder(self.nc)

    def lifetime(self) -> float:
        """queuelifetime, read live from the control KV. The directory takes any positive
        integer: one past a float's range means never, not an OverflowError in every
        deferral (the results task, and with it the process, ended on each)."""
        try:
            return float(self.control.integer("queuelifetime", DEFAULT_LIFETIME))
        except OverflowError:
            return math.inf

    async def consume(self, stream: str, durable: str, subject: str,
                      handle: Callable[[list[Msg]], Awaitable[None]]) -> None:
        """Feed `handle` batches from one of the queue's own durable consumers (todo,
        results) for ever: a lone message at once when idle, up to CONSUME_BATCH gathered
        for CONSUME_BATCH_WAIT under load, CONSUME_LINGER after a batch that was not full
        so the next one is bigger. NATS away is a pause, not a crash."""
        s = self.settings

        async def bind() -> None:
            await bus.ensure_consumer(self.js, stream, durable, filter_subject=subject,
                                      ack_wait=s.consume_ack_wait, max_deliver=-1,
                                      max_ack_pending=10_000)

        self.consuming[durable] = False  # readiness: not before the consumer is bound
        while True:
            try:
                await bind()
                break
            except NotFoundError as exc:  # its stream deleted between start and bind
                log.warning("%s not bound (%s): creating the mail streams again", durable, exc)
                with contextlib.suppress(Exception):
                    await bus.ensure_mail_streams(self.js)
                await asyncio.sleep(0.5)
        puller = BatchPull(self.nc, stream, durable)
        await puller.start()
        self.consuming[durable] = True
        busy = False  # the last pull brought something (see batch_pull.pull)
        while True:
            try:
                msgs = await pull(puller, s.consume_batch, busy=busy, idle_wait=1.0,
                                  busy_wait=s.consume_batch_wait)
            except TimeoutError:
                busy = False
                self.consuming[durable] = True
                continue
            except ServiceUnavailableError:
                # Nobody answers for the consumer: it (or its stream) was deleted. Both
                # again, or every fetch fails until a restart; not ready meanwhile.
                self.consuming[durable] = False
                try:
                    await bus.ensure_mail_streams(self.js)
                    await bind()
                    log.warning("%s was gone: created again", durable)
                except Exception as exc:
                    log.warning("%s is gone and not created again yet: %s", durable, exc)
                    await asyncio.sleep(0.5)
                continue
            except Exception as exc:
                log.warning("%s fetch failed: %s", durable, exc)
                await asyncio.sleep(0.5)
                continue
            busy = bool(msgs)
            self.consuming[durable] = True
            await handle(msgs)
            if len(msgs) < s.consume_batch and s.consume_linger:
                await asyncio.sleep(s.consume_linger)

    def events(self) -> Events:
        """A batch of DeliveryEvents: add() each, then send() them as one NATS message."""
        return Events(self)

    async def event(self, kind: str, queue_id: str, recipient: str = "", channel: int = 0,
                    outcome: int = 0, reply: str = "") -> None:
        """One DeliveryEvent on core NATS for `queue watch`; lost if nobody listens."""
        batch = self.events()
        batch.add(kind, queue_id, recipient, channel, outcome, reply)
        await batch.send()

    async def refresh_not_preprocessed(self) -> int:
        try:
            info = await self.js.consumer_info(bus.TODO_STREAM, bus.TODO_CONSUMER, timeout=0.5)
            self.not_preprocessed = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        except Exception as exc:
            log.debug("todo consumer info unavailable: %s", exc)
        return self.not_preprocessed


class Events:
    """DeliveryEvents published together on core NATS (`mailyard.events`): one message per
    step of the queue instead of one per event. Best effort, like every event."""

    def __init__(self, queue: Queue) -> None:
        self.q = queue
        self.batch = queue_pb2.DeliveryEvents()
        self.at = Timestamp()
        self.at.FromNanoseconds(time.time_ns())

    def add(self, kind: str, queue_id: str, recipient: str = "", channel: int = 0,
            outcome: int = 0, reply: str = "") -> None:
        self.batch.events.add(at=self.at, queue_id=queue_id, recipient=recipient,
                              channel=enum(channel), outcome=enum(outcome), reply=reply,
                              kind=kind)

    def __len__(self) -> int:
        return len(self.batch.events)

    async def send(self) -> None:
        if not self.batch.events:
            return
        data = self.batch.SerializeToString()
        self.batch.Clear()
        try:
            await self.q.nc.publish(bus.EVENTS_SUBJECT, data)
        except Exception as exc:  # events are best effort; the state is what counts
            log.debug("events not published: %s", exc)
