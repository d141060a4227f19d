"""js_publish on a real nats-server: an ack, a refusal, no stream, no ack in time, an ack
after its publish gave up, many publishes at once on one connection, and a reconnect."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.js.errors import APIError, NoStreamResponseError

from mailyard.core import bus, js_publish
from mailyard.core.natsserver import NatsServer


async def test_an_acked_publish_is_stored(js: Any) -> None:
    acks = js_publish.publisher(js._nc)
    await acks.publish(bus.TODO_SUBJECT, b"one", {"Nats-Msg-Id": "m1"})
    await acks.publish(bus.TODO_SUBJECT, b"one", {"Nats-Msg-Id": "m1"})  # a duplicate: acked
    info = await js.stream_info(bus.TODO_STREAM)
    assert info.state.messages == 1
    assert not acks.pending
    assert js_publish.publisher(js._nc) is acks  # one per connection


async def test_many_at_once_share_one_inbox(js: Any) -> None:
    acks = js_publish.publisher(js._nc)
    await asyncio.gather(*(acks.publish(bus.TODO_SUBJECT, b"x", {"Nats-Msg-Id": f"m{i}"})
                           for i in range(200)))
    info = await js.stream_info(bus.TODO_STREAM)
    assert info.state.messages == 200
    assert not acks.pending


async def test_a_refusal_is_nats_pys_api_error(js: Any) -> None:
    acks = js_publish.publisher(js._nc)
    with pytest.raises(APIError) as refused:
        await acks.publish(bus.TODO_SUBJECT, b"x", {"Nats-Expected-Stream": "ANOTHER"})
    assert refused.value.err_code == 10060  # expected stream does not match
    info = await js.stream_info(bus.TODO_STREAM)
    assert info.state.messages == 0


async def test_no_stream_is_no_stream_response(js: Any) -> None:
    acks = js_publish.publisher(js._nc)
    with pytest.raises(NoStreamResponseError):
        await acks.publish("nobody.listens.here", b"x")
    assert not acks.pending


async def test_no_ack_in_time_times_out_and_a_late_ack_is_ignored(js: Any) -> None:
    nc = js._nc
    acks = js_publish.publisher(nc)
    taken: list[Any] = []

    async def keep(msg: Any) -> None:
        taken.append(msg)

    await nc.subscribe("slow.acker", cb=keep)  # takes it and acks only later
    with pytest.raises(TimeoutError):
        await acks.publish("slow.acker", b"x", timeout=0.3)
    assert not acks.pending
    await nc.publish(taken[0].reply, b'{"stream":"X","seq":1}')  # the late ack: no effect
    await acks.publish(bus.TODO_SUBJECT, b"after")  # and the publisher goes on
    assert not acks.pending


async def test_it_goes_on_after_nats_server_restarts(nats_server: NatsServer) -> None:
    nc = await bus.connect(nats_server.url, "pytest")
    try:
        js = nc.jetstream()
        await bus.ensure_mail_streams(js)
        acks = js_publish.publisher(nc)
        await acks.publish(bus.TODO_SUBJECT, b"before")
        nats_server.stop()
        nats_server.start()
        for _ in range(100):  # nats-py reconnects, and subscribes the inbox again
            if nc.is_connected:
                break
            await asyncio.sleep(0.1)
        for _ in range(50):
            try:
                await acks.publish(bus.TODO_SUBJECT, b"after", timeout=1.0)
                break
            except (TimeoutError, NoStreamResponseError):
                await asyncio.sleep(0.1)
        else:
            pytest.fail("no ack after the restart")
        info = await js.stream_info(bus.TODO_STREAM)
        assert info.state.messages == 2
    finally:
        await nc.close()
