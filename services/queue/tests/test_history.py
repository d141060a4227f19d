"""History (qmail's log, searchable): recorded by the queue into MAIL_HISTORY, searched over
gRPC, HTTP and `mailyard log`; `queue explain` of a finished message shows it."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from mailyard.api.history.v1 import history_pb2 as hpb
from mailyard.api.history.v1 import history_pb2_grpc
from mailyard.cli.main import main
from mailyard.core import bus
from mailyard.core.spool import Spool

from .conftest import DEFERRED, DELIVERED, gone, send, wait_for

GREYLISTED = "451 4.7.1 greylisted, come back later"
ACCEPTED = "250 2.0.0 Ok: queued as 4BC1"


def _http(q: Any, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{q.http_port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
async def delivered(js: Any, spool: Spool, workers: Any, start_queue: Any) -> Any:
    """One message from Alice, deferred once, then delivered, then done."""
    q = start_queue(HISTORY_DAYS="2")
    q.history = history_pb2_grpc.HistoryStub(q.channel)
    env = await send(spool, js, "Alice@Sender.test", ["bob@remote.test"])
    job = await workers["remote"].job()
    await workers["remote"].report(job, DEFERRED, GREYLISTED)
    job = await workers["remote"].job()
    await workers["remote"].report(job, DELIVERED, ACCEPTED)
    await wait_for(lambda: gone(q, env.queue_id), what="message done")

    async def recorded() -> bool:
        resp = await q.history.Search(hpb.SearchRequest(queue_id=env.queue_id), timeout=10)
        return [e.kind for e in resp.events][-1:] == ["done"]

    await wait_for(recorded, what="history recorded")
    return q, env


async def test_every_step_is_recorded_and_found_by_id_address_and_time(
        delivered: Any, js: Any) -> None:
    q, env = delivered
    resp = await q.history.Search(hpb.SearchRequest(queue_id=env.queue_id), timeout=10)
    kinds = [(e.kind, e.result) for e in resp.events]
    assert kinds == [("new", ""), ("delivery", "deferred"), ("delivery", "delivered"),
                     ("done", "")]
    new, deferral, success, _ = resp.events
    assert new.sender == "Alice@Sender.test" and list(new.recipients) == ["bob@remote.test"]
    assert new.size == env.size > 0
    assert deferral.reply == GREYLISTED and success.reply == ACCEPTED
    assert success.remote_host == "mx.remote.test" and success.recipient == "bob@remote.test"

    for address in ("alice@sender.test", "BOB@remote.test"):  # sender or recipient, any case
        by_address = await q.history.Search(hpb.SearchRequest(address=address), timeout=10)
        assert [e.queue_id for e in by_address.events] == [env.queue_id] * 4
    other = await q.history.Search(hpb.SearchRequest(address="carol@x.test"), timeout=10)
    assert not other.events
    since = hpb.SearchRequest()
    since.since.FromSeconds(int(time.time()) - 600)
    assert env.queue_id in {e.queue_id for e in
                            (await q.history.Search(since, timeout=10)).events}
    later = hpb.SearchRequest(address="alice@sender.test")
    later.since.FromSeconds(int(time.time()) + 60)
    assert not (await q.history.Search(later, timeout=10)).events
    # retention is the HISTORY_DAYS setting
    info = await js.stream_info(bus.HISTORY_STREAM)
    assert info.config.max_age == 2 * 86400


async def test_an_address_is_found_in_either_unicode_normal_form(
        js: Any, spool: Spool, start_queue: Any) -> None:
    """Mail from jose\u0301@ (NFD, as the client sent it) was not found by a search for
    jos\u00e9@ (NFC, as most keyboards type it), nor the other way round: the history keeps
    addresses as sent and now matches them in NFC, as the directory does."""
    q = start_queue()
    q.history = history_pb2_grpc.HistoryStub(q.channel)
    nfd = await send(spool, js, "jose\u0301@sender.test", ["re\u0301my@remote.test"])

    async def found(address: str) -> list[str]:
        resp = await q.history.Search(hpb.SearchRequest(address=address), timeout=10)
        return [e.queue_id for e in resp.events]

    assert await wait_for(lambda: found("jose\u0301@sender.test"), what="history recorded")
    for address in ("jos\u00e9@sender.test", "JOS\u00c9@Sender.test", "r\u00e9my@remote.test"):
        assert nfd.queue_id in await found(address), address


async def test_http_cli_and_explain_of_a_finished_message(
        delivered: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    q, env = delivered
    status, body = _http(q, "/api/history?address=bob@remote.test")
    assert status == 200 and [e["kind"] for e in body["events"]][-1] == "done"
    assert body["events"][2]["reply"] == ACCEPTED
    status, body = _http(q, "/api/history?id=not-an-id!")
    assert status == 400 and "not a queue id" in body["detail"]

    monkeypatch.setenv("MAILYARD_QUEUE_ADDR", f"127.0.0.1:{q.grpc_port}")
    assert await asyncio.to_thread(main, ["log", "--id", env.queue_id]) == 0
    out = capsys.readouterr().out
    assert f"{env.queue_id} new msg: bytes {env.size} from <Alice@Sender.test>" in out
    assert f"delivery remote <bob@remote.test>: deferred [mx.remote.test]: {GREYLISTED}" in out
    assert f"{env.queue_id} done" in out
    assert await asyncio.to_thread(main, ["queue", "explain", env.queue_id]) == 0
    out = capsys.readouterr().out
    assert "no longer queued" in out and ACCEPTED in out
    assert await asyncio.to_thread(main, ["log", "--address", "nobody@x.test"]) == 1
    assert await asyncio.to_thread(main, ["log", "--id", "bad id"]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


async def test_json_log_carries_addresses_and_replies(delivered: Any) -> None:
    q, _ = delivered
    lines = [json.loads(x) for x in q.proc.log_path.read_text().splitlines()
             if x.startswith("{")]
    new = next(x for x in lines if x["msg"] == "new message")
    assert new["sender"] == "Alice@Sender.test" and new["recipients"] == ["bob@remote.test"]
    replies = [x["reply"] for x in lines if x.get("recipient") == "bob@remote.test"]
    assert replies == [GREYLISTED, ACCEPTED]
    with urllib.request.urlopen(f"http://127.0.0.1:{q.http_port}/metrics") as resp:
        assert "remote.test" not in resp.read().decode()  # metrics stay free of addresses


async def test_follow_streams_new_steps_filtered(js: Any, spool: Spool,
                                                 start_queue: Any) -> None:
    q = start_queue()
    stub = history_pb2_grpc.HistoryStub(q.channel)
    call = stub.Follow(hpb.SearchRequest(address="watched@remote.test"))
    events = call.__aiter__()
    first = asyncio.ensure_future(events.__anext__())
    sent: list[str] = []
    while not first.done():  # the server subscribes some time after the call starts
        sent.append((await send(spool, js, "x@y.test", ["watched@remote.test"])).queue_id)
        await asyncio.wait({first}, timeout=0.5)
    assert first.result().kind == "new" and first.result().queue_id in sent
    unwatched = await send(spool, js, "x@y.test", ["someone@remote.test"])
    watched = await send(spool, js, "x@y.test", ["Watched@remote.test"])
    seen = []
    while watched.queue_id not in seen:
        seen.append((await asyncio.wait_for(events.__anext__(), 30)).queue_id)
    assert unwatched.queue_id not in seen
    call.cancel()


async def test_a_huge_queue_id_is_refused_and_mail_keeps_flowing(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    """Follow subscribes to the id's subject on the queue's own NATS connection: a SUB line
    past nats-server's max_control_line (4 KiB) made the server close that connection, and
    the leader dispatched nothing more. A queue id is 26 characters; a long one is refused."""
    q = start_queue()
    stub = history_pb2_grpc.HistoryStub(q.channel)
    huge = hpb.SearchRequest(queue_id="A" * 5000)
    follow = stub.Follow(huge)
    assert await asyncio.wait_for(follow.code(), 30) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Search(huge, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as exc:  # not quoted whole: past 16 KiB of
        await q.explain("A" * 20_000)                 # details the client drops the status
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND, exc.value.details()
    env = await send(spool, js, "x@y.test", ["someone@remote.test"])
    assert (await workers["remote"].job()).queue_id == env.queue_id


async def test_bad_search_is_invalid_argument(start_queue: Any) -> None:
    q = start_queue()
    stub = history_pb2_grpc.HistoryStub(q.channel)
    beyond_9999 = Timestamp(seconds=10**15)  # on the wire, nothing checks a Timestamp
    for req in (hpb.SearchRequest(queue_id="../x"), hpb.SearchRequest(limit=10**6),
                hpb.SearchRequest(since=beyond_9999),
                hpb.SearchRequest(address="a@b.test", until=Timestamp(nanos=-1))):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.Search(req, timeout=10)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    # the same over HTTP: a 4xx naming the problem, not a 500
    for query, what in (("limit=4294967296", "limit"), ("limit=-1", "limit"),
                        ("since=9999-12-31T23:59:59-14:00", "since"),
                        ("until=0001-01-01T00:00:00%2B14:00", "until")):
        status, body = _http(q, f"/api/history?{query}")
        assert status in (400, 422) and what in json.dumps(body), (query, status, body)


async def test_batched_reads_page_through_a_long_subject_and_start_by_time(js: Any) -> None:
    """read_batch: more records than one batch (FETCH) come back whole and in order; a start
    time skips what was stored before it; an unknown subject is empty."""
    from mailyard.queue import history_search

    await bus.ensure_history_stream(js, 86400)
    subject = "mailyard.history.addr.test"
    total = history_search.FETCH * 2 + 7
    for i in range(total):
        await js.publish(subject, str(i).encode())
    assert [int(d) for d in await history_search.read_batch(js, subject)] == list(range(total))
    assert len(await history_search.read_batch(js, subject, max_msgs=5)) == 5
    middle = time.time()  # after the acks above, before the next store (one machine's clock)
    await js.publish(subject, b"after")
    assert await history_search.read_batch(js, subject, since=middle) == [b"after"]
    assert await history_search.read_batch(js, "mailyard.history.addr.none") == []


def _metric(q: Any, line_start: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{q.http_port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.split()[-1])
    return 0.0


async def test_leader_and_standby_answer_from_their_own_index(
        delivered: Any, start_queue: Any, tmp_path: Any) -> None:
    """Each queue process keeps its own history index (a file in its STATE_DIR) and
    answers from it: the standby too, with the same answer as the leader."""
    q, env = delivered
    standby = start_queue(wait=False, STATE_DIR=str(tmp_path / "standby"), HISTORY_DAYS="2")
    stub = history_pb2_grpc.HistoryStub(standby.channel)
    req = hpb.SearchRequest(address="bob@remote.test")
    want = await q.history.Search(req, timeout=10)
    assert [e.kind for e in want.events] == ["new", "delivery", "delivery", "done"]

    async def same() -> bool:
        return await stub.Search(req, timeout=10) == want

    await wait_for(same, what="the standby's answer")
    status, body = _http(standby, f"/api/history?id={env.queue_id}")
    assert status == 200 and len(body["events"]) == 4
    searches = 'mailyard_queue_history_searches_total{source="index"}'
    for proc in (q, standby):
        assert _metric(proc, searches) >= 1
        assert _metric(proc, "mailyard_queue_history_index_lag_events") == 0
    assert (tmp_path / "standby" / "history-index.db").is_file()
    assert (tmp_path / "state" / "history-index.db").is_file()
