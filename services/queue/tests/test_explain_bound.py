"""Explain of one message and List's pages are bounded: every recipient's last reply is in
them (in Explain twice: the summary and the details), and a remote may answer 32 KB; 100
recipients deferred that way made an answer past gRPC's 4 MiB, and the operator got
RESOURCE_EXHAUSTED and nothing."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import grpc
import pytest

from mailyard.api.history.v1 import history_pb2 as hpb
from mailyard.api.history.v1 import history_pb2_grpc
from mailyard.api.mail.v1 import delivery_pb2 as dpb
from mailyard.api.queue.v1 import queue_pb2 as qpb
from mailyard.cli.main import main as cli
from mailyard.core import bus
from mailyard.core.paging import PAGE_BYTES
from mailyard.core.spool import Spool
from mailyard.queue import answer_bound
from mailyard.queue.answer_bound import EXPLAIN_BYTES, SEARCH_BYTES

from .conftest import DEFERRED, send, wait_for


def _reply(i: int) -> str:
    """A 32 KB reply, as aiosmtplib takes one (MAX_RESPONSE_LENGTH), each its own."""
    return f"451 4.7.1 r{i} " + " ".join(f"word{n}" for n in range(32_000 // 9))[:32_000]


async def _report(js: Any, job: dpb.DeliveryJob, reply: str) -> None:
    result = dpb.DeliveryResult(job_id=job.job_id, queue_id=job.queue_id,
                                channel=job.channel, worker="pytest")
    for rcpt in job.recipients:
        result.results.append(dpb.RecipientResult(recipient=rcpt, outcome=DEFERRED,
                                                  reply=reply, enhanced_code="4.7.1"))
    await bus.publish(js, bus.RESULT_SUBJECT.format(channel="remote"), result,
                      msg_id=f"result-{job.job_id}")


async def test_explain_of_a_message_with_100_long_replies_fits(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    q = start_queue(RETRY_C_REMOTE="600")
    n = 100
    env = await send(spool, js, "s@sender.test", [f"r{i}@d{i}.remote.test" for i in range(n)])
    replies = {}
    for _ in range(n):  # one job per domain
        job = await workers["remote"].job()
        i = int(job.recipients[0].split("@")[0][1:])
        replies[job.recipients[0]] = _reply(i)
        await _report(js, job, replies[job.recipients[0]])

    async def all_deferred() -> bool:
        page = await q.stub.List(qpb.ListRequest(state=qpb.RECIPIENT_STATE_DEFERRED))
        return bool(page.messages) and all(
            r.state == qpb.RECIPIENT_STATE_DEFERRED for r in page.messages[0].recipients)

    await wait_for(all_deferred, 60, what="every recipient deferred")
    try:
        detail = await q.explain(env.queue_id)
    except grpc.aio.AioRpcError as exc:
        raise AssertionError(f"{exc.code()}: {exc.details()}") from None
    assert detail.ByteSize() <= EXPLAIN_BYTES
    assert len(detail.recipients) == len(detail.summary.recipients) == n
    assert detail.recipients_left_out == 0 and detail.replies_cut == n
    for r in [*detail.recipients, *detail.summary.recipients]:  # the head of each, and why
        full = replies[r.address]
        head, _, note = r.last_reply.partition(" [")
        assert full.startswith(head) and len(head) >= 1000
        assert note == f"{len(head)} of {len(full)} characters]"

    # the HTTP twin answers the same
    url = f"http://127.0.0.1:{q.http_port}/api/messages/{env.queue_id}"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read())
    assert len(body) <= 2 * EXPLAIN_BYTES
    answer = json.loads(body)
    assert (len(answer["recipients"]), answer["replies_cut"]) == (n, n)


async def test_explain_of_a_message_with_thousands_of_recipients_says_how_many_are_left_out(
        js: Any, spool: Spool, start_queue: Any, capsys: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    q = start_queue(RETRY_C_REMOTE="600")
    monkeypatch.setenv("MAILYARD_QUEUE_ADDR", f"127.0.0.1:{q.grpc_port}")
    n = 3000
    rcpts = [f"{'x' * 200}{i:05d}@example.test" for i in range(n)]
    env = await send(spool, js, "s@sender.test", rcpts)
    await wait_for(lambda: q.explain(env.queue_id), 30, what="the message in queue")
    detail = await q.explain(env.queue_id)
    assert detail.ByteSize() <= EXPLAIN_BYTES
    kept = len(detail.recipients)
    assert 1000 < kept < n and len(detail.summary.recipients) == kept
    assert detail.recipients_left_out == n - kept
    assert [r.address for r in detail.recipients] == rcpts[:kept]  # in order, the first
    assert cli(["queue", "explain", env.queue_id]) == 0
    out = capsys.readouterr().out
    assert "recipient(s) more, not shown" in out  # its state may have moved on


async def test_list_pages_of_messages_with_long_replies_fit(
        js: Any, spool: Spool, workers: Any, start_queue: Any, capsys: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """70 messages, each with two recipients deferred with a 32 KB reply: the default page
    (100 messages) was 4.5 MB. Now a page stops at about PAGE_BYTES (AIP-158 lets it hold
    fewer than page_size) and one message alone has its replies cut as in Explain."""
    q = start_queue(RETRY_C_REMOTE="600")
    monkeypatch.setenv("MAILYARD_QUEUE_ADDR", f"127.0.0.1:{q.grpc_port}")
    n = 70
    envs = [await send(spool, js, f"s{i}@sender.test",
                       [f"a{i}@d{i}a.remote.test", f"b{i}@d{i}b.remote.test"])
            for i in range(n)]
    big = await send(spool, js, "big@sender.test",
                     [f"r{i}@big{i}.remote.test" for i in range(140)])
    for _ in range(2 * n + 140):  # one job per domain
        job = await workers["remote"].job()
        await _report(js, job, _reply(0))

    async def all_deferred() -> bool:
        listed = []
        token = ""
        while True:
            page = await q.stub.List(qpb.ListRequest(
                state=qpb.RECIPIENT_STATE_DEFERRED, page_size=1000, page_token=token))
            listed += [r.state for m in page.messages for r in m.recipients]
            token = page.next_page_token
            if not token:
                return listed.count(qpb.RECIPIENT_STATE_DEFERRED) == 2 * n + 140

    await wait_for(all_deferred, 60, what="every recipient deferred")
    seen: list[str] = []
    token = ""
    while True:
        try:
            page = await q.stub.List(qpb.ListRequest(page_token=token), timeout=10)
        except grpc.aio.AioRpcError as exc:
            raise AssertionError(f"{exc.code()}: {exc.details()}") from None
        assert page.ByteSize() <= 2 * PAGE_BYTES
        seen += [m.queue_id for m in page.messages]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(e.queue_id for e in [*envs, big])  # each once, in order
    alone = await q.stub.List(qpb.ListRequest(sender="big@"))
    assert alone.ByteSize() <= 2 * PAGE_BYTES
    reply = alone.messages[0].recipients[0].last_reply
    assert reply.endswith(f" of {len(_reply(0))} characters]")
    assert cli(["queue", "read", "--why", "--all-pages"]) == 0
    out = capsys.readouterr().out
    assert out.count("1 attempt(s), next ") == 2 * n + 140


async def test_the_history_of_a_message_with_long_replies_fits(
        js: Any, spool: Spool, workers: Any, start_queue: Any, capsys: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attempt's reply is in a message's history (`mailyard log --id`, and `queue
    explain` of a finished message): 140 recipients deferred with 32 KB replies made a
    4.6 MB answer, RESOURCE_EXHAUSTED. Now each long reply keeps its head, and past that
    the oldest steps are left out; the answer says how many of each."""
    q = start_queue(RETRY_C_REMOTE="600")
    monkeypatch.setenv("MAILYARD_QUEUE_ADDR", f"127.0.0.1:{q.grpc_port}")
    history = history_pb2_grpc.HistoryStub(q.channel)
    n = 140
    env = await send(spool, js, "s@sender.test", [f"r{i}@d{i}.remote.test" for i in range(n)])
    for _ in range(n):
        job = await workers["remote"].job()
        await _report(js, job, _reply(int(job.recipients[0].split("@")[0][1:])))
    request = hpb.SearchRequest(queue_id=env.queue_id)

    async def recorded() -> hpb.SearchResponse | None:
        resp = await history.Search(request, timeout=10)
        return resp if sum(e.kind == "delivery" for e in resp.events) == n else None

    resp = await wait_for(recorded, 60, what="every deferral recorded")
    assert resp.ByteSize() <= SEARCH_BYTES
    assert resp.replies_cut == n and resp.events_left_out == 0
    assert resp.events[0].kind == "new"
    for e in resp.events[1:]:
        full = _reply(int(e.recipient.split("@")[0][1:]))
        head, _, note = e.reply.partition(" [")
        assert full.startswith(head) and note == f"{len(head)} of {len(full)} characters]"
    url = f"http://127.0.0.1:{q.http_port}/api/history?id={env.queue_id}"
    answer = json.loads(await asyncio.to_thread(
        lambda: urllib.request.urlopen(url, timeout=30).read()))
    assert len(answer["events"]) == n + 1 and answer["replies_cut"] == n
    assert await asyncio.to_thread(cli, ["log", "--id", env.queue_id]) == 0
    assert capsys.readouterr().out.count(": deferred: 451 4.7.1 r") == n


def test_past_the_bound_the_oldest_history_events_are_left_out() -> None:
    """3,000 attempts of 32 KB: even cut to their heads they pass SEARCH_BYTES, so the
    oldest go and the answer says how many; the newest are kept, in order."""
    events = [hpb.HistoryEvent(queue_id="01J0000000000000000000000A", kind="delivery",
                               recipient=f"r{i}@d.test", result="deferred", reply=_reply(i))
              for i in range(3000)]
    resp = hpb.SearchResponse(events=events)
    answer_bound.history(resp)
    assert resp.ByteSize() <= SEARCH_BYTES
    kept = len(resp.events)
    assert 0 < kept < 3000 and resp.events_left_out == 3000 - kept
    assert [e.recipient for e in resp.events] == [e.recipient for e in events[-kept:]]
    assert resp.replies_cut == kept
    assert all(e.reply.endswith(f" of {len(_reply(int(e.recipient[1:].split('@')[0])))} "
                                "characters]") for e in resp.events)
