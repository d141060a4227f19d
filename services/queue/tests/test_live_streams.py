"""The live streams, Watch (`mailyard queue watch`) and Follow (`mailyard log -f`): what a
client has not read yet is bounded in bytes (LIVE_STREAM_BUFFER), and a client that read
too slowly is told where it missed events instead of the queue's memory growing."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from mailyard.api.history.v1 import history_pb2 as hpb
from mailyard.api.history.v1 import history_pb2_grpc
from mailyard.api.queue.v1 import queue_pb2 as qpb
from mailyard.api.queue.v1 import queue_pb2_grpc
from mailyard.core import bus
from mailyard.queue.history import msg_subject

BOUND = 64 * 1024
EVENT = 16 * 1024      # bytes of text in each event of the burst: one NATS message each
BURST = 512            # 8 MiB: far more than the bound and gRPC's windows together
# gRPC's window stays at its initial 64 KiB without BDP probing, so what the stalled client
# holds outside the queue is known
NO_BDP = [("grpc.http2.bdp_probe", 0)]


def _watch_message(name: str, text: str = "") -> bytes:
    batch = qpb.DeliveryEvents()
    batch.events.add(kind=name, queue_id=name, reply=text).at.GetCurrentTime()
    return batch.SerializeToString()


def _follow_message(name: str, text: str = "") -> bytes:
    event = hpb.HistoryEvent(kind=name, queue_id=name, detail=text)
    event.at.GetCurrentTime()
    return event.SerializeToString()


async def _until_read(nc: Any, call: Any, publish: Callable[[str], Any], name: str,
                      seen: list[Any], timeout: float = 30.0) -> None:
    """Publish `name` again and again until the stream `call` gives it back; what it gives
    before goes to `seen` (publishing again because a live stream keeps nothing: a copy sent
    before the subscription, or dropped, is not seen)."""

    async def read() -> None:
        while True:
            event = await call.read()
            assert event is not grpc.aio.EOF, "the stream ended"
            seen.append(event)
            if event.queue_id == name:
                return

    reading = asyncio.ensure_future(read())
    async with asyncio.timeout(timeout):
        while not reading.done():
            await publish(name)
            await nc.flush()
            await asyncio.wait({reading}, timeout=0.2)
    reading.result()


async def _stall_then_read(js: Any, open_stream: Callable[[grpc.aio.Channel], Any],
                           subject: Callable[[str], str],
                           message: Callable[..., bytes], port: int) -> list[Any]:
    """Open a stream that stops reading, publish BURST events of EVENT bytes on `subject`,
    then read that stream: what it says from the burst on."""
    nc = js._nc

    async def publish(name: str, text: str = "") -> None:
        await nc.publish(subject(name), message(name, text))

    stalled_channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=NO_BDP)
    reader_channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        stalled, reader = open_stream(stalled_channel), open_stream(reader_channel)
        await _until_read(nc, stalled, publish, "ready", [])
        await _until_read(nc, reader, publish, "ready2", [])
        for i in range(BURST):
            await publish(f"burst{i:04d}", "x" * EVENT)
        # The queue reads its NATS messages in order on one connection: once the reader has
        # one published after the burst, the stalled stream's subscription had the burst.
        await _until_read(nc, reader, publish, "end", [])
        seen: list[Any] = []
        await _until_read(nc, stalled, publish, "after", seen)
        return seen
    finally:
        await stalled_channel.close()
        await reader_channel.close()


def _check(seen: list[Any], dropped: Callable[[Any], bool]) -> None:
    """The burst's events in order, each run of missed ones marked by a gap where it was,
    and far fewer kept than sent."""
    kept: list[int] = []
    gaps, marked = 0, False  # a gap marked since the last burst event
    for event in seen:
        if dropped(event):
            gaps, marked = gaps + 1, True
        elif event.queue_id.startswith("burst"):
            i = int(event.queue_id.removeprefix("burst"))
            expected = kept[-1] + 1 if kept else 0
            assert i == expected or (i > expected and marked), \
                f"burst{expected:04d} to burst{i - 1:04d} missed, no gap before burst{i:04d}"
            kept.append(i)
            marked = False
    assert gaps, f"no gap signalled; {len(kept)} of {BURST} burst events kept"
    assert marked or kept[-1:] == [BURST - 1], "the end of the burst missed, no gap after"
    assert len(kept) * EVENT < 1024 * 1024, f"{len(kept)} events of {EVENT} bytes kept"


async def test_a_watcher_that_stops_reading_misses_events_and_is_told(
        js: Any, start_queue: Any) -> None:
    q = start_queue(LIVE_STREAM_BUFFER=str(BOUND))
    seen = await _stall_then_read(
        js, lambda chan: queue_pb2_grpc.QueueServiceStub(chan).Watch(qpb.WatchRequest()),
        lambda _: bus.EVENTS_SUBJECT, _watch_message, q.grpc_port)
    _check(seen, lambda e: e.kind == "dropped" and "read too slowly" in e.reply)


async def test_a_follower_that_stops_reading_misses_events_and_is_told(
        js: Any, start_queue: Any) -> None:
    q = start_queue(LIVE_STREAM_BUFFER=str(BOUND))
    seen = await _stall_then_read(
        js, lambda chan: history_pb2_grpc.HistoryStub(chan).Follow(hpb.SearchRequest()),
        msg_subject, _follow_message, q.grpc_port)
    _check(seen, lambda e: e.kind == "dropped" and "read too slowly" in e.detail)


async def test_the_cli_says_where_events_were_dropped(js: Any, start_queue: Any,
                                                      tmp_path: Path) -> None:
    """`queue watch` and `log -f` print one line on stderr for each gap, and go on."""
    q = start_queue(LIVE_STREAM_BUFFER="1024")  # an event of 2 KiB never fits: each a gap
    env = {**os.environ, "MAILYARD_QUEUE_ADDR": f"127.0.0.1:{q.grpc_port}"}
    for args, subject, message in (
            (["queue", "watch"], lambda _: bus.EVENTS_SUBJECT, _watch_message),
            (["log", "-f"], msg_subject, _follow_message)):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailyard.cli.main", *args, cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert proc.stderr is not None
        try:
            lines = []
            async with asyncio.timeout(30):
                while len(lines) < 2:  # two gaps: the stream went on after the first
                    line = asyncio.ensure_future(proc.stderr.readline())
                    while not line.done():
                        await js._nc.publish(subject("big"), message("big", "x" * 2048))
                        await asyncio.wait({line}, timeout=0.2)
                    lines.append(line.result().decode())
        finally:
            proc.terminate()
            await proc.wait()
        for text in lines:
            assert text.startswith("mailyard: ") and text.endswith("\n"), (args, text)
            assert "events were dropped here: the client read too slowly" in text, text
        if args[0] == "log":
            assert "mailyard log --since 20" in lines[0]


async def test_a_watch_outlives_a_message_it_cannot_read(js: Any, start_queue: Any) -> None:
    """mailyard.events is core NATS, open to every client of the bus: a message that is not
    DeliveryEvents is skipped, as Follow skips one that is not a HistoryEvent."""
    q = start_queue()
    call = q.stub.Watch(qpb.WatchRequest())

    async def publish(name: str) -> None:
        await js._nc.publish(bus.EVENTS_SUBJECT, _watch_message(name))

    await _until_read(js._nc, call, publish, "ready", [])
    await js._nc.publish(bus.EVENTS_SUBJECT, b"\xff not protobuf")
    await _until_read(js._nc, call, publish, "after", [])
    call.cancel()


async def test_past_live_streams_a_stream_gets_resource_exhausted(
        js: Any, start_queue: Any) -> None:
    """Each live stream is a NATS subscription of the queue's own connection that gets every
    event: 2,000 Watch calls (one client, under MAX_RPCS) made nats-server close that
    connection as a slow consumer at the first burst of events. LIVE_STREAMS bounds them,
    Watch and Follow together."""
    q = start_queue(LIVE_STREAMS="2")
    nc = js._nc
    history = history_pb2_grpc.HistoryStub(q.channel)

    async def watch_event(name: str) -> None:
        await nc.publish(bus.EVENTS_SUBJECT, _watch_message(name))

    async def follow_event(name: str) -> None:
        await nc.publish(msg_subject(name), _follow_message(name))

    watch = q.stub.Watch(qpb.WatchRequest())
    await _until_read(nc, watch, watch_event, "ready", [])
    follow = history.Follow(hpb.SearchRequest())
    await _until_read(nc, follow, follow_event, "ready", [])
    for third in (q.stub.Watch(qpb.WatchRequest()), history.Follow(hpb.SearchRequest())):
        assert await asyncio.wait_for(third.code(), 10) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many live streams" in (await third.details() or "")
    watch.cancel()  # its place is free once the queue has seen it go

    async def admitted() -> bool:
        again = q.stub.Watch(qpb.WatchRequest())
        try:
            await _until_read(nc, again, watch_event, "again", [], timeout=5)
        except AssertionError:  # refused: the stream ended
            assert await again.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return False
        again.cancel()
        return True

    async with asyncio.timeout(30):
        while not await admitted():
            await asyncio.sleep(0.1)
        follow.cancel()  # and a Follow's place too
        watch = q.stub.Watch(qpb.WatchRequest())
        await _until_read(nc, watch, watch_event, "ready3", [])
        while not await admitted():
            await asyncio.sleep(0.1)
    watch.cancel()
