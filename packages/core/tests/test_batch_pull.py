"""BatchPull on a real nats-server: a full batch, a short one when the request expires,
nothing, a message that came after its fetch gave up, and a consumer that is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from nats.js.errors import ServiceUnavailableError

from mailyard.core import batch_pull
from mailyard.core.batch_pull import BatchPull, pull


@pytest.fixture
async def puller(js: Any) -> AsyncIterator[BatchPull]:
    await js.add_stream(StreamConfig(name="B", subjects=["b.>"]))
    await js.add_consumer("B", ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT))
    p = BatchPull(js._nc, "B", "d")
    await p.start()
    yield p
    await p.stop()


async def put(js: Any, count: int) -> None:
    for i in range(count):
        await js.publish("b.x", str(i).encode())


async def test_a_full_batch_then_the_rest_then_nothing(js: Any, puller: BatchPull) -> None:
    await put(js, 7)
    first = await puller.fetch(5, 5.0)  # full: back at once, not after 5 s
    assert [m.data for m in first] == [b"0", b"1", b"2", b"3", b"4"]
    rest = await puller.fetch(5, 0.3)  # the request expires with two
    assert [m.data for m in rest] == [b"5", b"6"]
    for m in first + rest:
        await m.ack()
    with pytest.raises(TimeoutError):
        await puller.fetch(5, 0.2)
    info = await js.consumer_info("B", "d")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_idle_takes_one_busy_takes_a_batch(js: Any, puller: BatchPull) -> None:
    await put(js, 3)
    assert len(await pull(puller, 10, busy=False, idle_wait=5.0)) == 1
    assert len(await pull(puller, 10, busy=True, idle_wait=5.0, busy_wait=0.2)) == 2


async def test_a_message_after_its_fetch_gave_up_is_kept(js: Any, puller: BatchPull,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # our side gives up 0.05 s in, nats-server holds the request open for 2 s
    monkeypatch.setattr(batch_pull, "LOST_AFTER", -1.95)
    with pytest.raises(TimeoutError):
        await puller.fetch(1, 2.0)
    await put(js, 1)  # delivered for the request given up on
    monkeypatch.setattr(batch_pull, "LOST_AFTER", 2.0)
    for _ in range(50):
        if puller._got:
            break
        await asyncio.sleep(0.02)
    [late] = await puller.fetch(1, 0.2)  # handed out with no new request
    assert late.data == b"0"
    await late.ack()


async def test_a_consumer_that_is_gone(js: Any, puller: BatchPull) -> None:
    waiting = asyncio.create_task(puller.fetch(1, 5.0))
    await asyncio.sleep(0.2)
    await js.delete_consumer("B", "d")  # while a request is open: 409 Consumer Deleted
    with pytest.raises(ServiceUnavailableError):
        await asyncio.wait_for(waiting, 3)
    with pytest.raises(ServiceUnavailableError):  # and asked again: nobody answers (503)
        await asyncio.wait_for(puller.fetch(1, 1.0), 3)
