"""The queue's admin plane with a token table: gRPC (UNAUTHENTICATED / PERMISSION_DENIED)
and the HTTP API (401 / 403), the CLI with and without its token, /docs and /metrics open."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from mailyard.api.history.v1 import history_pb2 as hpb
from mailyard.api.history.v1 import history_pb2_grpc
from mailyard.api.queue.v1 import queue_pb2 as qpb
from mailyard.api.queue.v1 import queue_pb2_grpc
from mailyard.cli.main import main
from mailyard.core import auth
from mailyard.testing.grpccalls import status_of

from .conftest import watching


def _http(port: int, path: str, token: str | None = None,
          body: dict[str, Any] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"}
                                             if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (http:// only)
            raw = resp.read()
            return resp.status, json.loads(raw) if raw.startswith(b"{") else raw
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
async def guarded(start_queue: Any, tmp_path: Path) -> tuple[Any, dict[str, str]]:
    tokens = auth.write_table(tmp_path / "tokens")
    return start_queue(TOKENS_FILE=str(tmp_path / "tokens")), tokens


async def test_grpc_needs_a_token_and_the_role(guarded: Any) -> None:
    q, tokens = guarded
    addr = f"127.0.0.1:{q.grpc_port}"

    channels: dict[str | None, Any] = {}  # kept: a channel nobody holds is closed

    def stub(token: str | None) -> queue_pb2_grpc.QueueServiceStub:
        chan = channels.setdefault(token, auth.aio_channel(addr, token))
        return queue_pb2_grpc.QueueServiceStub(chan)

    hold = qpb.SelectRequest(queue_ids=["01NOTINQUEUE"])
    assert await status_of(stub(None).Stat(qpb.StatRequest(), timeout=10)) == \
        grpc.StatusCode.UNAUTHENTICATED
    assert await status_of(stub(tokens["read"]).Stat(qpb.StatRequest(), timeout=10)) == \
        grpc.StatusCode.OK
    assert await status_of(stub(tokens["read"]).Hold(hold, timeout=10)) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert await status_of(stub(tokens["ingress"]).Stat(qpb.StatRequest(), timeout=10)) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert await status_of(stub(tokens["admin"]).Hold(hold, timeout=10)) == grpc.StatusCode.OK
    history = history_pb2_grpc.HistoryStub(channels[tokens["read"]])
    assert await status_of(history.Search(hpb.SearchRequest(), timeout=10)) == grpc.StatusCode.OK
    history = history_pb2_grpc.HistoryStub(channels[None])
    assert await status_of(history.Search(hpb.SearchRequest(), timeout=10)) == \
        grpc.StatusCode.UNAUTHENTICATED


async def test_http_api_401_403(guarded: Any) -> None:
    q, tokens = guarded
    port = q.http_port
    status, body = _http(port, "/api/stat")
    assert status == 401 and "Bearer" in body["detail"]
    assert _http(port, "/api/stat", "x" * 40)[0] == 401
    assert _http(port, "/api/stat", tokens["read"])[0] == 200
    assert _http(port, "/api/status", tokens["read"])[1]["line"].startswith("status: local ")
    action = {"queue_ids": ["01NOTINQUEUE"]}
    assert _http(port, "/api/actions/hold", tokens["read"], action)[0] == 403
    assert _http(port, "/api/actions/hold", None, action)[0] == 401
    status, body = _http(port, "/api/actions/hold", tokens["admin"], action)
    assert status == 200 and body["unknown_ids"] == ["01NOTINQUEUE"]
    assert _http(port, "/api/actions/hold", tokens["admin"], {})[0] == 400
    assert _http(port, "/api/actions/explode", tokens["admin"], action)[0] == 404
    # a misspelt field is refused, not ignored: "recipent" would bounce every recipient
    status, body = _http(port, "/api/actions/bounce", tokens["admin"],
                         {**action, "recipent": "one@remote.test"})
    assert status == 422 and "recipent" in json.dumps(body), body
    # open: probes, metrics and the API's description
    assert _http(port, "/docs")[0] == 200 and _http(port, "/openapi.json")[0] == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200


async def test_cli_uses_its_token_file(guarded: Any, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    q, _ = guarded
    monkeypatch.setenv("MAILYARD_QUEUE_ADDR", f"127.0.0.1:{q.grpc_port}")
    monkeypatch.chdir(tmp_path)  # no ./var/auth/tokens here
    assert await asyncio.to_thread(main, ["queue", "stat"]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    monkeypatch.setenv("MAILYARD_TOKEN_FILE", str(tmp_path / "tokens"))
    assert await asyncio.to_thread(main, ["queue", "stat"]) == 0
    assert "messages in queue: 0" in capsys.readouterr().out
    monkeypatch.setenv("MAILYARD_ROLE", "read")
    assert await asyncio.to_thread(main, ["queue", "hold", "--all"]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    monkeypatch.setenv("MAILYARD_TOKEN_FILE", str(tmp_path / "nowhere"))
    assert await asyncio.to_thread(main, ["queue", "stat"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mailyard: token file") and "Traceback" not in err


async def test_streams_carry_the_token(guarded: Any, js: Any) -> None:
    """Watch and Follow (server streams) with the token like unary calls: the services'
    asyncio channel once sent it with unary calls only, and the CLI's blocking one too."""
    q, tokens = guarded
    addr = f"127.0.0.1:{q.grpc_port}"
    read, none, ingress = (auth.aio_channel(addr, t) for t in (tokens["read"], None,
                                                               tokens["ingress"]))
    # Follow: past the token check the service itself answers (a bad search)
    bad = hpb.SearchRequest(queue_id="../x")
    for chan, code in ((read, grpc.StatusCode.INVALID_ARGUMENT),
                       (none, grpc.StatusCode.UNAUTHENTICATED),
                       (ingress, grpc.StatusCode.PERMISSION_DENIED)):
        assert await _end_code(history_pb2_grpc.HistoryStub(chan).Follow(bad)) == code
    events: list[qpb.DeliveryEvent] = []

    async def watch() -> None:
        async for ev in queue_pb2_grpc.QueueServiceStub(read).Watch(qpb.WatchRequest()):
            events.append(ev)

    watcher = asyncio.create_task(watch())
    try:
        await watching(js, events)  # events come through: the stream was accepted
    finally:
        watcher.cancel()
    assert await _end_code(queue_pb2_grpc.QueueServiceStub(none).Watch(qpb.WatchRequest())) == \
        grpc.StatusCode.UNAUTHENTICATED
    assert await _end_code(queue_pb2_grpc.QueueServiceStub(ingress).Watch(
        qpb.WatchRequest())) == grpc.StatusCode.PERMISSION_DENIED
    for chan in (read, none, ingress):
        await chan.close()

    def follow_blocking(token: str | None) -> grpc.StatusCode:  # as `mailyard history follow`
        with auth.channel(addr, token) as chan:
            try:
                list(history_pb2_grpc.HistoryStub(chan).Follow(bad, timeout=10))
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    assert await asyncio.to_thread(follow_blocking, tokens["read"]) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert await asyncio.to_thread(follow_blocking, None) == grpc.StatusCode.UNAUTHENTICATED


async def _end_code(call: Any) -> grpc.StatusCode:
    """The code a server stream ends with (one that is refused ends at once)."""
    return await call.code()  # type: ignore[no-any-return]
