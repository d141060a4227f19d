"""The history index (history_index.py, fed by history_feed.py) against a real nats-server:
it catches up and answers exactly what the stream search answers, resumes after a restart,
starts over when the stream was purged or re-created or the file is damaged, deletes what
is older than HISTORY_DAYS, and leaves searches to the stream while it is catching up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mailyard.api.history.v1 import history_pb2 as hpb
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus
from mailyard.queue import metrics
from mailyard.queue.history import Recorder
from mailyard.queue.history_feed import HistoryFeed, stream_id
from mailyard.queue.history_index import FILE_NAME, HistoryIndex
from mailyard.queue.history_search import (
    MAX_STEPS,
    IndexSource,
    StreamSource,
    answer,
    check,
    choose,
    search,
)

BUSY = "Busy@Sender.test"


async def record(js: Any, messages: int, *, sender: str = BUSY, tag: str = "m",
                 steps: int = 2) -> list[str]:
    """`messages` messages through the queue's own Recorder: new (+ its address refs),
    `steps` deliveries, done; returns their queue ids once the stream holds them all."""
    nc = js._nc
    before = (await js.stream_info(bus.HISTORY_STREAM)).state.messages
    rec = Recorder(nc)
    ids = []
    for i in range(messages):
        qid = f"{tag}{i:05d}{time.time_ns() % 10**6:06d}"
        rcpt = f"rcpt{i % 7}@remote.test"
        rec.new(Envelope(queue_id=qid, sender=sender, recipients=[rcpt], size=100 + i))
        for n in range(steps):
            rec.delivery(qid, rcpt, "remote", "deferred" if n < steps - 1 else "delivered",
                         f"reply {n}", "mx.remote.test")
        rec.step(qid, "done")
        ids.append(qid)
        if i % 200 == 199:
            await rec.flush()
    await rec.flush()
    await nc.flush()
    want = before + messages * (4 + steps)
    while (await js.stream_info(bus.HISTORY_STREAM)).state.messages < want:
        await asyncio.sleep(0.05)
    return ids


class Running:
    """A feed on its index file, running as a task (as in the queue process)."""

    def __init__(self, js: Any, path: Path, **kw: Any) -> None:
        self.js = js
        self.feed = HistoryFeed(js, HistoryIndex(path), days=kw.pop("days", 30.0), **kw)
        self.task = asyncio.create_task(self.feed.run())

    async def caught_up(self, timeout: float = 30.0) -> HistoryFeed:
        info = await self.js.stream_info(bus.HISTORY_STREAM)
        assert await self.feed.caught_up(stream_id(info), info.state.last_seq, timeout), \
            f"index at {self.feed.index.last_seq}, stream at {info.state.last_seq}"
        return self.feed

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def running(js: Any, tmp_path: Path) -> AsyncIterator[Callable[..., Running]]:
    await bus.ensure_history_stream(js, 86400)
    made: list[Running] = []

    def start(**kw: Any) -> Running:
        made.append(Running(js, tmp_path / "state" / FILE_NAME, **kw))
        return made[-1]

    yield start
    for r in made:
        if not r.task.done():
            await r.stop()


async def both(js: Any, feed: HistoryFeed, req: hpb.SearchRequest) -> hpb.SearchResponse:
    """The request answered from the stream and from the index: they must be equal."""
    source = await choose(js, feed, wait=5.0)
    assert isinstance(source, IndexSource)
    limit = check(req)
    from_stream = await answer(StreamSource(js), req, limit)
    from_index = await answer(source, req, limit)
    assert from_index == from_stream, req
    return from_index


def _since(seconds: float) -> hpb.SearchRequest:
    req = hpb.SearchRequest()
    req.since.FromNanoseconds(int(seconds * 1e9))
    return req


async def test_index_answers_exactly_what_the_stream_answers(js: Any, running: Any) -> None:
    early = await record(js, 30, tag="a")
    await asyncio.sleep(0.05)
    middle = time.time()
    await asyncio.sleep(0.05)
    late = await record(js, 30, tag="b")
    nulls = await record(js, 3, sender="", tag="n")  # bounces: the null sender <>
    long = await record(js, 1, sender="retry@sender.test", tag="l", steps=MAX_STEPS + 50)
    self_sent = await record(js, 2, sender="rcpt1@remote.test", tag="s")  # i=1: to itself
    await js.publish(bus.HISTORY_ADDR_SUBJECT.format(key="junk"), b"\xff not a ref")
    await js.publish(bus.HISTORY_MSG_SUBJECT.format(queue_id="junk"), b"\xff not an event")
    feed = await running().caught_up()

    resp = await both(js, feed, hpb.SearchRequest(address=BUSY))
    assert {e.queue_id for e in resp.events} == {*early, *late} and not resp.truncated
    resp = await both(js, feed, hpb.SearchRequest(address="busy@sender.TEST", limit=5))
    assert {e.queue_id for e in resp.events} == set(late[-5:]) and resp.truncated
    resp = await both(js, feed, hpb.SearchRequest(address="rcpt1@remote.test"))
    news = [e.queue_id for e in resp.events if e.kind == "new"]
    assert self_sent[1] in news and len(news) == len(set(news))  # each message once
    resp = await both(js, feed, hpb.SearchRequest(address="<>"))
    assert {e.queue_id for e in resp.events} == set(nulls)
    resp = await both(js, feed, hpb.SearchRequest(queue_id=long[0]))
    assert len(resp.events) == MAX_STEPS  # the first MAX_STEPS steps of a long retry
    await both(js, feed, hpb.SearchRequest(queue_id=long[0], address="retry@sender.test"))
    resp = await both(js, feed, hpb.SearchRequest(queue_id=early[3], address="x@y.test"))
    assert not resp.events
    await both(js, feed, hpb.SearchRequest(queue_id="unknown1"))
    await both(js, feed, hpb.SearchRequest(address="nobody@x.test"))
    await both(js, feed, hpb.SearchRequest(address="rcpt3@remote.test", limit=4))
    # --since / --until on an address, and by time alone (the window ends at `limit`)
    req = _since(middle)
    req.address = BUSY
    resp = await both(js, feed, req)
    assert {e.queue_id for e in resp.events} == set(late)
    req = hpb.SearchRequest(address=BUSY)
    req.until.FromNanoseconds(int(middle * 1e9))
    assert {e.queue_id for e in (await both(js, feed, req)).events} == set(early)
    resp = await both(js, feed, _since(middle))
    assert [e.queue_id for e in resp.events][:1] == late[:1]
    resp = await both(js, feed, hpb.SearchRequest(limit=7, since=_since(middle).since))
    assert len({e.queue_id for e in resp.events}) == 7 and resp.truncated
    req = _since(time.time() - 60)
    req.until.FromNanoseconds(int(middle * 1e9))
    req.limit = 1000
    assert {e.queue_id for e in (await both(js, feed, req)).events} == set(early)
    assert not (await both(js, feed, _since(time.time() + 60))).events


async def test_a_restart_reads_only_what_it_missed(js: Any, running: Any) -> None:
    await record(js, 50)
    first = running()
    feed = await first.caught_up()
    held = feed.index.last_seq
    await first.stop()
    await record(js, 10, tag="x")
    again = running()
    feed = await again.caught_up()
    # the new steps only (new, 2 deliveries, done), not their 2 address refs
    assert feed.read == 10 * 4
    assert feed.index.last_seq == held + 60
    resp = await both(js, feed, hpb.SearchRequest(address=BUSY))
    assert len({e.queue_id for e in resp.events}) == 60


async def test_a_flush_ending_in_a_new_message_leaves_the_index_level_with_the_stream(
        js: Any, running: Any) -> None:
    """The feed reads only steps; a new message's references go before its `new` event, so
    the stream's last record is a step and the index catches up with it (with the event
    first, searches read the stream until the message's next step)."""
    await record(js, 3)
    feed = await running().caught_up()
    rec = Recorder(js._nc)
    rec.new(Envelope(queue_id="lastnew00001", sender=BUSY, recipients=["a@x.test", "b@x.test"]))
    await rec.flush()
    info = await js.stream_info(bus.HISTORY_STREAM)
    while info.state.last_seq < feed.index.last_seq + 4:  # 3 refs and the event stored
        await asyncio.sleep(0.02)
        info = await js.stream_info(bus.HISTORY_STREAM)
    assert await feed.caught_up(stream_id(info), info.state.last_seq, 30)
    assert feed.index.last_seq == info.state.last_seq
    resp = await both(js, feed, hpb.SearchRequest(address="B@x.test"))
    assert [e.queue_id for e in resp.events] == ["lastnew00001"]


def _rebuilds(reason: str) -> float:
    return metrics.HISTORY_INDEX_REBUILDS.labels(reason)._value.get()


async def test_a_stream_purged_while_the_queue_was_down_starts_the_index_over(
        js: Any, running: Any) -> None:
    await record(js, 20, tag="old")
    first = running()
    await first.caught_up()
    await first.stop()
    purged = _rebuilds("purged")
    await js.purge_stream(bus.HISTORY_STREAM)
    new = await record(js, 3, tag="new")
    feed = await running().caught_up()
    assert _rebuilds("purged") == purged + 1
    assert feed.read == 3 * 4
    assert await feed.index.run(feed.index.counts) == (3 * 4, 3 * 2)
    resp = await both(js, feed, hpb.SearchRequest(address=BUSY))
    assert {e.queue_id for e in resp.events} == set(new)


async def test_a_purge_while_running_is_never_answered_and_expires(js: Any,
                                                                   running: Any) -> None:
    await record(js, 20, tag="old")
    feed = await running().caught_up()
    await js.purge_stream(bus.HISTORY_STREAM)
    new = await record(js, 3, tag="new")
    await _caught_up(js, feed)
    resp = await both(js, feed, hpb.SearchRequest(address=BUSY))  # bounded by the stream
    assert {e.queue_id for e in resp.events} == set(new)
    await feed.expire()  # whether the feed started over or not, only the new rows remain
    assert await feed.index.run(feed.index.counts) == (3 * 4, 3 * 2)


async def test_a_recreated_stream_starts_the_index_over(js: Any, running: Any) -> None:
    await record(js, 20, tag="old")
    feed = await running().caught_up()
    recreated = _rebuilds("recreated")
    await js.delete_stream(bus.HISTORY_STREAM)
    await bus.ensure_history_stream(js, 86400)
    again = await record(js, 2, tag="re")  # seqs from 1 again
    await _wait(lambda: _rebuilds("recreated") == recreated + 1, "rebuild after re-creation")
    await _caught_up(js, feed)
    assert await feed.index.run(feed.index.counts) == (2 * 4, 2 * 2)
    resp = await both(js, feed, hpb.SearchRequest(address=BUSY))
    assert {e.queue_id for e in resp.events} == set(again)


async def test_a_damaged_file_is_rebuilt(js: Any, running: Any, tmp_path: Path) -> None:
    ids = await record(js, 5)
    path = tmp_path / "state" / FILE_NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not an SQLite file" * 100)
    damaged = _rebuilds("damaged")
    feed = await running().caught_up()
    assert _rebuilds("damaged") == damaged + 1
    resp = await both(js, feed, hpb.SearchRequest(address=BUSY))
    assert {e.queue_id for e in resp.events} == set(ids)


async def test_retention_deletes_old_rows_in_bounded_batches(js: Any, running: Any) -> None:
    await record(js, 10, tag="old")
    # HISTORY_DAYS of 0.3 s: the first records are old by the time of the expiry
    feed = await running(days=0.3 / 86400, expire_batch=7).caught_up()
    await asyncio.sleep(0.4)
    young = await record(js, 2, tag="young")
    await _caught_up(js, feed)
    assert await feed.expire() == 10 * 6
    assert await feed.index.run(feed.index.counts) == (2 * 4, 2 * 2)
    assert await feed.expire() == 0
    resp = await answer(IndexSource(feed.index, 1, feed.index.last_seq),
                        hpb.SearchRequest(address=BUSY), 100)
    assert {e.queue_id for e in resp.events} == set(young)


async def test_searches_read_the_stream_until_the_index_has_caught_up(
        js: Any, running: Any) -> None:
    await record(js, 1500)
    req = hpb.SearchRequest(address=BUSY, limit=1000)
    searches = metrics.HISTORY_SEARCHES.labels("stream")._value.get()
    slow = running(batch=20)  # catching up takes a while
    source = await choose(js, slow.feed, wait=0)
    assert isinstance(source, StreamSource)
    assert metrics.HISTORY_SEARCHES.labels("stream")._value.get() == searches + 1
    during = await answer(source, req, 1000)
    feed = await slow.caught_up(60)
    assert await answer(await choose(js, feed, wait=0), req, 1000) == during
    assert len({e.queue_id for e in during.events}) == 1000 and during.truncated


async def _wait(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _caught_up(js: Any, feed: HistoryFeed) -> None:
    info = await js.stream_info(bus.HISTORY_STREAM)
    assert await feed.caught_up(stream_id(info), info.state.last_seq, 30)


async def test_the_feed_carries_on_after_nats_server_restarts(js: Any, running: Any,
                                                              nats_server: Any) -> None:
    """The feed's consumer lives in nats-server's memory: after a restart it is gone, and
    the feed makes a new one from the last stored seq."""
    await record(js, 5, tag="before")
    feed = await running().caught_up()
    nats_server.stop()
    nats_server.start()
    await _wait_async(lambda: js.stream_info(bus.HISTORY_STREAM), "the client reconnected")
    after = await record(js, 5, tag="after")
    await _caught_up(js, feed)
    assert feed.read == 10 * 4  # nothing read twice
    resp = await both(js, feed, hpb.SearchRequest(address=BUSY))
    assert {e.queue_id for e in resp.events} >= set(after)


async def _wait_async(step: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await step()
            return
        except Exception:
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.1)


async def test_a_file_damaged_under_an_open_index_falls_back_and_is_rebuilt(
        js: Any, running: Any, tmp_path: Path) -> None:
    """Pages damaged on disk that opening does not read: the search that meets them is
    answered from the stream, and the feed starts the index over."""
    ids = await record(js, 300)
    first = running()
    await first.caught_up()
    await first.stop()  # closed: everything is in the main file (no WAL left)
    path = tmp_path / "state" / FILE_NAME
    size = path.stat().st_size
    with open(path, "r+b") as f:  # the second half: leaves of the tables, not their roots
        f.seek(size // 2)
        f.write(b"\xa5" * (size - size // 2))
    damaged, from_stream = _rebuilds("damaged"), _searches("stream")
    feed = await running().caught_up()  # opening reads the schema and meta pages only
    req = hpb.SearchRequest(address=BUSY, limit=1000)
    resp = await search(js, req, feed)
    assert resp == await answer(StreamSource(js), req, 1000)
    assert {e.queue_id for e in resp.events} == set(ids)
    assert _searches("stream") == from_stream + 1  # the index failed; the stream answered
    await _wait(lambda: _rebuilds("damaged") == damaged + 1, "the index started over")
    await _caught_up(js, feed)
    assert await search(js, req, feed) == resp
    assert _searches("stream") == from_stream + 1  # the rebuilt index answered


def _searches(source: str) -> float:
    return metrics.HISTORY_SEARCHES.labels(source)._value.get()


async def test_an_index_that_cannot_be_opened_leaves_searches_to_the_stream(
        js: Any, running: Any, tmp_path: Path) -> None:
    """No room, no permission (here: a directory where the file goes) is no damage: nothing
    is deleted, searches read the stream, and the feed opens the file once it can."""
    ids = await record(js, 3)
    path = tmp_path / "state" / FILE_NAME
    path.mkdir(parents=True)
    damaged = _rebuilds("damaged")
    r = running()
    await asyncio.sleep(0.5)
    assert isinstance(await choose(js, r.feed, wait=0.5), StreamSource)
    assert path.is_dir() and not r.task.done() and _rebuilds("damaged") == damaged
    path.rmdir()
    feed = await r.caught_up()
    resp = await both(js, feed, hpb.SearchRequest(address=BUSY))
    assert {e.queue_id for e in resp.events} == set(ids)
