"""The operator's actions over gRPC and the CLI: list paging and filters, retry, hold,
release, delete, bounce, fsck, watch."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from mailyard.api.mail.v1 import delivery_pb2 as dpb
from mailyard.api.queue.v1 import queue_pb2 as qpb
from mailyard.cli.main import main as cli
from mailyard.core import bus
from mailyard.core.spool import Spool

from .conftest import DEFERRED, finished, send, wait_for, watching

WAIT = "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)"


async def _state(q: Any, qid: str) -> int:
    return int((await q.explain(qid)).recipients[0].state)


async def test_operator_actions(js: Any, spool: Spool, workers: Any, start_queue: Any,
                                capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    q = start_queue(RETRY_C_REMOTE="600")  # deferrals wait: only the operator moves them
    monkeypatch.setenv("MAILYARD_QUEUE_ADDR", f"127.0.0.1:{q.grpc_port}")
    events: list[qpb.DeliveryEvent] = []

    async def watch() -> None:
        async for ev in q.stub.Watch(qpb.WatchRequest()):
            events.append(ev)

    watcher = asyncio.create_task(watch())
    await watching(js, events)
    m = [await send(spool, js, f"s{i}@sender.test", [f"r{i}@remote.test"]) for i in range(3)]
    for _ in m:
        await workers["remote"].report(await workers["remote"].job(), DEFERRED, WAIT)
    for env in m:
        await wait_for(lambda env=env: _is(q, env.queue_id, qpb.RECIPIENT_STATE_DEFERRED),
                       what="deferred")

    page = await q.stub.List(qpb.ListRequest(page_size=2))
    assert [x.queue_id for x in page.messages] == [m[0].queue_id, m[1].queue_id]
    rest = await q.stub.List(qpb.ListRequest(page_size=2, page_token=page.next_page_token))
    assert [x.queue_id for x in rest.messages] == [m[2].queue_id] and not rest.next_page_token
    only = await q.stub.List(qpb.ListRequest(recipient="r1@", state=qpb.RECIPIENT_STATE_DEFERRED))
    assert [x.queue_id for x in only.messages] == [m[1].queue_id]
    url = f"http://127.0.0.1:{q.http_port}/api/messages?state=deferred&sender=s2"
    with urllib.request.urlopen(url) as resp:
        assert [x["queue_id"] for x in json.load(resp)["messages"]] == [m[2].queue_id]

    assert cli(["queue", "explain", m[0].queue_id]) == 0
    out = capsys.readouterr().out
    assert "deferred" in out and "attempts 1" in out and WAIT in out and "next attempt" in out

    # read --why: each waiting recipient's attempts, next attempt and last reply
    assert cli(["queue", "read", "--why", "--recipient", "r1@"]) == 0
    out = capsys.readouterr().out
    assert f"#{m[1].queue_id}" in out and "1 attempt(s), next " in out and WAIT in out
    assert "GMT" in out.split("next ", 1)[1]

    # retry: due now, attempt 2; while a worker holds it, the status line counts it
    assert cli(["queue", "retry", m[0].queue_id]) == 0
    held = (await workers["remote"].sub.fetch(1, timeout=20))[0]  # taken, not yet acked
    capsys.readouterr()
    assert cli(["queue", "status"]) == 0
    assert capsys.readouterr().out == "status: local 0/1000 remote 1/1000\n"
    await held.ack()
    job = bus.decode(dpb.DeliveryJob, held.data)
    assert job.queue_id == m[0].queue_id and job.attempt == 2
    await workers["remote"].report(job, DEFERRED, WAIT)

    # an id not in queue: said so, exit 1
    assert cli(["queue", "hold", "01NOTINQUEUE"]) == 1
    assert "01NOTINQUEUE: not in queue" in capsys.readouterr().err
    # --all is the same on every verb; on delete and bounce it needs --yes
    for verb in ("delete", "bounce"):
        assert cli(["queue", verb, "--all"]) == 2
        assert "add --yes" in capsys.readouterr().err
    assert cli(["queue", "hold", "--all", m[1].queue_id]) == 2
    assert cli(["queue", "hold"]) == 2
    capsys.readouterr()

    # hold: put aside (retry leaves it alone); release: due now
    assert cli(["queue", "hold", m[1].queue_id]) == 0
    assert await _state(q, m[1].queue_id) == qpb.RECIPIENT_STATE_HELD
    assert (await q.stat()).held_messages == 1
    assert cli(["queue", "release", m[1].queue_id]) == 0
    job = await workers["remote"].job()
    assert job.queue_id == m[1].queue_id

    # delete: gone without a bounce
    assert cli(["queue", "delete", m[2].queue_id]) == 0
    assert await finished(q, spool, m[2])

    # bounce: failed now, DSN to the sender
    assert cli(["queue", "bounce", m[0].queue_id]) == 0
    bjob = await workers["remote"].job()
    assert list(bjob.recipients) == ["s0@sender.test"]
    text = (await spool.read(bjob.spool_path))[1].decode()
    assert "bounced by the queue operator" in text
    assert await finished(q, spool, m[0])

    assert cli(["queue", "fsck", "--dry-run"]) == 0
    assert "(dry run)" in capsys.readouterr().out
    assert cli(["queue", "stat"]) == 0
    assert "messages in queue: 2" in capsys.readouterr().out  # m[1] in flight + the bounce

    await wait_for(lambda: asyncio.sleep(0, {"new", "delivery", "bounce", "done"}
                                         <= {e.kind for e in events}), what="watch events")
    watcher.cancel()
    assert Path(spool.root, m[1].spool_path).exists()


async def _is(q: Any, qid: str, state: int) -> bool:
    return await _state(q, qid) == state


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (http://)
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


async def test_list_page_sizes_alike_on_every_plane(js: Any, spool: Spool, start_queue: Any,
                                                    capsys: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A negative page size is refused (HTTP 422 naming it, as every other listing's
    ?limit=; the CLI's usage error; gRPC's uint32 cannot carry one), 0 is the default and
    a huge one the maximum. ?page_size=-5 answered one message, as if asked for 1."""
    q = start_queue(RETRY_C_REMOTE="600")
    monkeypatch.setenv("MAILYARD_QUEUE_ADDR", f"127.0.0.1:{q.grpc_port}")
    m = [await send(spool, js, f"s{i}@sender.test", [f"r{i}@remote.test"]) for i in range(3)]
    ids = [e.queue_id for e in m]

    async def listed() -> bool:
        return len((await q.stub.List(qpb.ListRequest())).messages) == 3

    await wait_for(listed, what="three messages listed")
    for size in (0, 2**32 - 1):
        page = await q.stub.List(qpb.ListRequest(page_size=size))
        assert [x.queue_id for x in page.messages] == ids and not page.next_page_token
    base = f"http://127.0.0.1:{q.http_port}/api/messages"
    for query in ("page_size=-5", "page_size=-1", f"page_size={-2**40}", f"page_size={2**31}"):
        status, answer = await asyncio.to_thread(_get, f"{base}?{query}")
        assert status == 422 and "page_size" in json.dumps(answer["detail"]), (query, answer)
    for query, count in (("page_size=0", 3), ("", 3), (f"page_size={2**31 - 1}", 3),
                         ("page_size=2", 2)):
        status, answer = await asyncio.to_thread(_get, f"{base}?{query}")
        assert status == 200 and len(answer["messages"]) == count, (query, answer)
    with pytest.raises(SystemExit) as usage:
        cli(["queue", "read", "--limit", "-1"])
    assert usage.value.code == 2 and "--limit: -1 is not between" in capsys.readouterr().err


async def test_a_page_token_that_is_no_queue_id_is_refused(
        js: Any, spool: Spool, start_queue: Any, capsys: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A next_page_token is the last listed queue id; anything else (a typo, a token
    of another listing) listed nothing, exit 0: an empty queue to whoever asked. Now
    INVALID_ARGUMENT / 400 / one line, as the directory's and relay-auth's listings."""
    q = start_queue(RETRY_C_REMOTE="600")
    monkeypatch.setenv("MAILYARD_QUEUE_ADDR", f"127.0.0.1:{q.grpc_port}")
    env = await send(spool, js, "s@sender.test", ["r@remote.test"])

    async def listed() -> bool:
        return len((await q.stub.List(qpb.ListRequest())).messages) == 1

    await wait_for(listed, what="the message listed")
    for token in ("zzzz", "0" * 25, env.queue_id.lower(), "x" * 100_000):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await q.stub.List(qpb.ListRequest(page_token=token))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (refused.value.details() or "")
    status, answer = await asyncio.to_thread(
        _get, f"http://127.0.0.1:{q.http_port}/api/messages?page_token=zzzz")
    assert status == 400 and "page_token" in answer["detail"]
    assert await asyncio.to_thread(cli, ["queue", "read", "--page-token", "zzzz"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mailyard: INVALID_ARGUMENT: ") and err.count("\n") == 1
    # a real token still pages: the one before the message lists it
    page = await q.stub.List(qpb.ListRequest(page_token="0" * 26))
    assert [m.queue_id for m in page.messages] == [env.queue_id]


async def test_an_unknown_state_is_refused_on_grpc_as_on_http(start_queue: Any) -> None:
    """?state=nonsense is a 400 naming the states; gRPC's state=99 (an enum value this
    queue does not know, from a newer or a hand-made client) listed nothing, no error."""
    q = start_queue()
    for state in (99, -1, 6):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await q.stub.List(qpb.ListRequest(state=state))  # type: ignore[arg-type]
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"state {state}" in (refused.value.details() or "")
    assert not (await q.stub.List(qpb.ListRequest(state=qpb.RECIPIENT_STATE_HELD))).messages


async def test_http_pages_of_messages_link_the_next_as_every_listing(
        js: Any, spool: Spool, start_queue: Any) -> None:
    """/api/messages had next_page_token but not "next", the path of the next page that
    the directory's and relay-auth's listings give (a client follows links)."""
    q = start_queue(RETRY_C_REMOTE="600")
    ids = sorted([(await send(spool, js, f"s{i}@sender.test", [f"r{i}@remote.test"])).queue_id
                  for i in range(3)])

    async def listed() -> bool:
        return len((await q.stub.List(qpb.ListRequest())).messages) == 3

    await wait_for(listed, what="three messages listed")
    status, page = await asyncio.to_thread(
        _get, f"http://127.0.0.1:{q.http_port}/api/messages?page_size=2&sender=s")
    assert status == 200 and [m["queue_id"] for m in page["messages"]] == ids[:2]
    assert page["next"] == (f"/api/messages?page_size=2&sender=s"
                            f"&page_token={page['next_page_token']}")
    status, page = await asyncio.to_thread(
        _get, f"http://127.0.0.1:{q.http_port}{page['next']}")
    assert [m["queue_id"] for m in page["messages"]] == ids[2:] and page["next"] is None
