"""NATS_REPLICAS for real: on a 3-node JetStream cluster every stream and KV bucket a service
creates (or finds with fewer copies) has 3 replicas, and a publish is still acknowledged
with one node down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import nats.errors
import nats.js.errors
import pytest

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus
from mailyard.core.natsserver import NatsServer, free_port
from mailyard.core.settings import ServiceSettings


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NatsServer]]:
    base = tmp_path_factory.mktemp("cluster")
    routes = tuple(free_port() for _ in range(3))
    nodes = [NatsServer(base / f"n{i}", cluster_port=routes[i], routes=routes, name=f"n{i}")
             for i in range(3)]
    for i, node in enumerate(nodes):
        node.start(base / f"n{i}.log")
    yield nodes
    for node in nodes:
        node.stop()


async def _jetstream_ready(url: str) -> Any:
    nc = await bus.connect(url, "pytest")
    js = nc.jetstream()
    deadline = time.monotonic() + 30
    while True:  # the cluster elects its meta leader after the routes are up
        try:
            await js.account_info()
            return nc, js
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def test_setting_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILYARD_COMMON_NATS_REPLICAS", "7")
    with pytest.raises(Exception, match="NATS_REPLICAS"):
        ServiceSettings.load()
    with pytest.raises(ValueError):
        bus.set_replicas(0)


async def test_streams_and_buckets_get_the_setting_and_survive_a_node(
        cluster: list[NatsServer], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILYARD_COMMON_NATS_REPLICAS", "3")
    nc, js = await _jetstream_ready(cluster[0].url)
    try:
        # A bucket made earlier with one copy (an R1 release) is grown, not left at R1.
        await bus.ensure_kv(js, bus.KV_LOCKS, replicas=1)
        bus.set_replicas(ServiceSettings.load().nats_replicas)
        await bus.ensure_mail_streams(js)
        await bus.ensure_kv(js, bus.KV_LOCKS)
        await bus.ensure_kv(js, bus.KV_CONTROL)
        for stream in (*(s.name for s in bus.MAIL_STREAMS), "KV_locks", "KV_control"):
            info = await js.stream_info(stream)
            assert info.config.num_replicas == 3, stream
        cluster[2].stop(kill=True)
        # If the killed node led the stream, the other two elect a new leader first (a few
        # seconds on a busy machine); until then a publish finds no responder.
        deadline = time.monotonic() + 60
        while True:
            try:
                ack = await js.publish(bus.TODO_SUBJECT,
                                       Envelope(queue_id="x").SerializeToString(), timeout=10)
                break
            except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError,
                    nats.errors.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        assert ack.stream == bus.TODO_STREAM
    finally:
        bus.set_replicas(1)
        await nc.close()
