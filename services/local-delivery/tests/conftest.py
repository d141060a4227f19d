"""Real parts for local-delivery tests: nats-server, the spool, the worker in this process
(or as a child process), the directory seeded as protobuf records in its KV bucket, and
mailboxes read back with the standard library's mailbox.Maildir."""

from __future__ import annotations

import asyncio
import contextlib
import mailbox
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.mail.v1.delivery_pb2 import CHANNEL_LOCAL, DeliveryJob, DeliveryResult
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus
from mailyard.core.directory import domain_key, record_key
from mailyard.core.ids import new_queue_id
from mailyard.core.natsserver import NatsServer
from mailyard.core.spool import Spool
from mailyard.local_delivery.settings import Settings
from mailyard.local_delivery.worker import serve


class Env:
    def __init__(self, js: Any, spool: Spool, nats_url: str, tmp: Path) -> None:
        self.js = js
        self.spool = spool
        self.nats_url = nats_url
        self.mail_dir = tmp / "mail"
        self.tmp = tmp
        self._results: Any = None
        self._todo: Any = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the directory (written as the directory service would) -------------------------

    async def _put(self, key: str, record: Any) -> None:
        kv = await bus.ensure_kv(self.js, bus.KV_DIRECTORY)
        await kv.put(key, record.SerializeToString())

    async def domain(self, name: str, catch_all: Any = 0, target: str = "",
                     alias_of: str = "") -> None:
        await self._put(domain_key(name), pb.Domain(name=name, catch_all=catch_all,
                                                    catch_all_target=target,
                                                    alias_of=alias_of))

    async def mailbox(self, address: str, **fields: Any) -> None:
        await self._put(record_key("mailbox", address), pb.Mailbox(address=address, **fields))

    async def alias(self, address: str, *targets: str) -> None:
        await self._put(record_key("alias", address), pb.Alias(address=address,
                                                                targets=list(targets)))

    async def mailing_list(self, address: str, owner: str, *members: str,
                           **fields: Any) -> None:
        await self._put(record_key("list", address),
                        pb.MailingList(address=address, owner=owner, members=list(members),
                                       **fields))

    async def control(self, name: str, text: str) -> None:
        kv = await bus.ensure_kv(self.js, bus.KV_CONTROL)
        await kv.put(name, text.encode())

    # -- the worker ---------------------------------------------------------------------

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"nats_url": self.nats_url, "spool_dir": self.spool.root,
                                  "mail_dir": self.mail_dir, "http_port": 0,
                                  "instance": "test", "me": "mx.example.org"}
        values.update(overrides)
        return Settings.load(**values)

    async def start(self, **overrides: Any) -> None:
        settings = self.settings(**overrides)
        self._task = asyncio.create_task(serve(settings, self._stop))
        # Ready when the shared consumer exists (created by the worker at start).
        while True:
            if self._task.done():
                self._task.result()
            with contextlib.suppress(Exception):
                await self.js.consumer_info(bus.JOBS_STREAM, bus.JOB_CONSUMER["local"])
                return
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task:
            self._stop.set()
            await self._task
            self._task = None

    # -- the queue's side of the contract -----------------------------------------------

    async def commit(self, sender: str, recipients: list[str], data: bytes) -> Envelope:
        env = Envelope(queue_id=new_queue_id(), sender=sender, recipients=recipients)
        return await self.spool.commit(env, data)

    async def job(self, sender: str, recipients: list[str], data: bytes,
                  stored: Envelope | None = None, seq: int = 0) -> DeliveryJob:
        """`seq`: the queue's own form of job id, <queue id>-<seq> (default: a fresh id)."""
        stored = stored or await self.commit(sender, recipients, data)
        job_id = f"{stored.queue_id}-{seq}" if seq else new_queue_id()
        job = DeliveryJob(job_id=job_id, queue_id=stored.queue_id,
                          channel=CHANNEL_LOCAL, sender=sender, recipients=recipients,
                          spool_path=stored.spool_path, sha256=stored.sha256,
                          size=stored.size, attempt=1)
        await bus.publish(self.js, bus.JOB_SUBJECT["local"], job, msg_id=job.job_id)
        return job

    async def result(self, timeout: float = 30) -> DeliveryResult:
        if self._results is None:
            self._results = await self.js.pull_subscribe(
                bus.RESULT_SUBJECT.format(channel="local"), durable="test-results",
                stream=bus.RESULTS_STREAM)
        msgs = await self._results.fetch(1, timeout=timeout)
        await msgs[0].ack()
        return DeliveryResult.FromString(msgs[0].data)

    async def todo(self) -> tuple[Envelope, bytes]:
        if self._todo is None:
            self._todo = await self.js.pull_subscribe(bus.TODO_SUBJECT, durable="test-todo",
                                                      stream=bus.TODO_STREAM)
        msgs = await self._todo.fetch(1, timeout=30)
        await msgs[0].ack_sync()  # counted by todo_count() at once
        env = Envelope.FromString(msgs[0].data)
        _, data = await self.spool.read(env.spool_path)
        return env, data

    async def todo_count(self) -> int:
        info = await self.js.stream_info(bus.TODO_STREAM)
        return int(info.state.messages)

    # -- mailboxes ----------------------------------------------------------------------

    def maildir_path(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.mail_dir / domain / local / "Maildir"

    def messages(self, address: str) -> list[bytes]:
        path = self.maildir_path(address)
        if not path.exists():
            return []
        box = mailbox.Maildir(path, create=False)
        return sorted(box.get_bytes(key) for key in box.iterkeys())


@pytest.fixture
async def env(js: Any, spool: Spool, nats_server: NatsServer,
              tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(js, spool, nats_server.url, tmp_path)
    yield e
    await e.stop()
