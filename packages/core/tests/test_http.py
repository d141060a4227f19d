"""The admin HTTP server: a taken port is an error at start, not a half-started process;
what one client may send (a body's size) is bounded."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import urllib.error
import urllib.request

import httpx
import pytest
from fastapi import FastAPI, Response
from pydantic import BaseModel, Field

from mailyard.core.http import HttpServer, Limit, make_app
from mailyard.core.limits import MAX_BODY, MAX_CONNECTIONS


async def test_a_taken_port_fails_the_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = HttpServer(make_app("test", {}), "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError) as info:
            await server.start()
        assert info.value.errno == errno.EADDRINUSE


async def test_serves_on_the_port_it_bound() -> None:
    server = HttpServer(make_app("test", {"probe": lambda: True}), "127.0.0.1", 0)
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/readyz"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        assert json.loads(body) == {"ready": True, "checks": {"probe": True}}
    finally:
        await server.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "localhost.example.net", "::1:5", "127.0.0.1.nip.io"])
async def test_without_tokens_the_api_is_off_unless_on_loopback(host: str) -> None:
    """`host` is what the app was told it listens on (bound here on 127.0.0.1): only a
    loopback address or the name localhost itself keeps the API open without TOKENS_FILE."""
    app = make_app("test", {}, host=host)

    @app.get("/api/secret")
    async def secret() -> dict[str, str]:
        return {"secret": "yes"}

    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/api/secret"
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        assert refused.value.code == 403
    finally:
        await server.stop()


class Text(BaseModel):
    text: str
    secret: str = Field(default="", max_length=64)  # as a password field is bounded


def _echo_app() -> FastAPI:
    app = make_app("test", {})

    @app.put("/api/echo")
    async def echo(body: Text) -> dict[str, int]:
        return {"length": len(body.text)}

    return app


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response read off a raw connection: status, headers, body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {name.lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def test_a_declared_body_past_the_limit_is_refused_before_it_is_read() -> None:
    """Content-Length past MAX_BODY: 413 with a JSON reason at once, without waiting for
    (or holding) a byte of the body. It was read whole into memory first (200 MB of JSON
    took the process to 485 MB before the route refused it)."""
    server = HttpServer(_echo_app(), "127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"PUT /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (2 ** 30))
        status, headers, body = await asyncio.wait_for(_response(reader), 10)
        writer.close()
        assert status == 413
        assert headers["content-type"] == "application/json"
        assert str(MAX_BODY) in json.loads(body)["detail"]
    finally:
        await server.stop()


async def test_a_chunked_body_past_the_limit_is_refused_while_it_streams() -> None:
    """Without a Content-Length the body is counted as it arrives: 413 once it passes
    MAX_BODY, while the client may still be sending (it was read to the end, then parsed:
    422 here, after 16 MB held in memory)."""
    server = HttpServer(_echo_app(), "127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"PUT /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        answer = asyncio.create_task(_response(reader))
        chunk = b"x" * 65536
        sent = 0
        while not answer.done() and sent < 4 * MAX_BODY:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            sent += len(chunk)
        if not answer.done():
            writer.write(b"0\r\n\r\n")
        status, _, body = await asyncio.wait_for(answer, 10)
        writer.close()
        assert status == 413
        assert str(MAX_BODY) in json.loads(body)["detail"]
    finally:
        await server.stop()


async def test_a_body_within_the_limit_is_served() -> None:
    server = HttpServer(_echo_app(), "127.0.0.1", 0)
    await server.start()
    try:
        text = "x" * (MAX_BODY - 100)
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/api/echo", method="PUT",
            data=json.dumps({"text": text}).encode(), headers={"Content-Type": "application/json"})
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(request, timeout=10).read())  # noqa: S310 (http://)
        assert json.loads(body) == {"length": len(text)}
    finally:
        await server.stop()


@pytest.mark.parametrize("body", [b'{"text": NaN}', b'{"text": Infinity}',
                                  b'{"text": -Infinity}', b'{"text": 1e400}',
                                  b'{"text": [1, NaN]}'])
async def test_a_body_with_nan_or_infinity_is_a_422_not_a_500(body: bytes) -> None:
    """Python's JSON parser takes NaN, Infinity and 1e400 (inf), which JSON has not: the
    validation error that names the input then failed to render (JSON cannot say nan) and
    every route with a body answered 500 "Internal Server Error" in plain text, with a
    traceback in the log."""
    server = HttpServer(_echo_app(), "127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"PUT /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        status, headers, answer = await asyncio.wait_for(_response(reader), 10)
        writer.close()
        assert (status, headers["content-type"]) == (422, "application/json")
        assert json.loads(answer)["detail"]
    finally:
        await server.stop()


async def test_a_422_does_not_echo_what_was_sent() -> None:
    """FastAPI's 422 names each bad field with its `input`: a password one character too
    long came back in the answer, and with it into whatever logs the admin API's answers
    (a proxy, a CI job's output). The answer names the field and the rule, not the value."""
    server = HttpServer(_echo_app(), "127.0.0.1", 0)
    await server.start()
    try:
        secret = "correct-horse-battery-staple-" * 3
        async with httpx.AsyncClient() as client:
            answer = await client.put(f"http://127.0.0.1:{server.port}/api/echo",
                                      json={"text": "x", "secret": secret})
        assert answer.status_code == 422
        [error] = answer.json()["detail"]
        assert error["loc"] == ["body", "secret"] and "64" in error["msg"]
        assert "correct-horse" not in answer.text
    finally:
        await server.stop()


@pytest.mark.parametrize(("query", "status", "named"), [
    ("limit=5&limit=100000", 400, "limit"),
    ("address=a@x.test&address=b@x.test", 400, "address"),
    ("address=&limit=1&address=", 400, "address"),
    ("limit=5&address=a@x.test", 200, ""),
])
async def test_a_query_parameter_given_twice_is_a_400(query: str, status: int,
                                                      named: str) -> None:
    """`?limit=5&limit=100000` took the last value, `?address=a&address=b` too: which one
    the client meant is anyone's guess (a proxy or a script may have added the second), so
    like any other bad input it is a 400 naming the parameter, in JSON."""
    app = make_app("test", {})

    @app.get("/api/items")
    async def items(limit: Limit = 0, address: str = "") -> dict[str, object]:
        return {"limit": limit, "address": address}

    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{server.port}/api/items?{query}")
        assert answer.status_code == status, answer.text
        if named:
            assert answer.headers["content-type"] == "application/json"
            assert answer.json() == {"detail": f"query parameter {named!r} given more than "
                                               "once"}
    finally:
        await server.stop()


@pytest.mark.parametrize("sent", [
    b"GARBAGE\r\n\r\n",
    b"GET /api/echo HTTP/1.1\r\n\r\n",  # no Host
    b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: t\r\n\r\n",
], ids=["garbage", "no-host", "negative-length", "nul-in-target"])
async def test_a_request_that_is_not_http_gets_a_json_400(sent: bytes) -> None:
    """What h11 cannot parse was answered by uvicorn in text/plain ("Invalid HTTP request
    received."), unlike every other error of the admin API; now the same 400 in JSON, with
    its length, and the connection closed."""
    server = HttpServer(_echo_app(), "127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(sent)
        status, headers, body = await asyncio.wait_for(_response(reader), 10)
        assert (status, headers["content-type"]) == (400, "application/json")
        assert "HTTP" in json.loads(body)["detail"]
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed
        writer.close()
    finally:
        await server.stop()


async def test_a_failing_route_answers_a_json_500() -> None:
    """A bug in a route (an exception nothing turned into an HTTP error) was Starlette's
    text/plain "Internal Server Error": the one answer left that was not the API's JSON."""
    app = _echo_app()

    @app.get("/api/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /api/broken HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = await asyncio.wait_for(_response(reader), 10)
        writer.close()
        assert (status, headers["content-type"]) == (500, "application/json")
        assert json.loads(body)["detail"]
    finally:
        await server.stop()


async def _closed_with_408(reader: asyncio.StreamReader) -> bool:
    status, _, body = await _response(reader)
    return (status == 408 and "0.5 s" in json.loads(body)["detail"]
            and await reader.read() == b"")


@pytest.mark.parametrize("sent", [
    b"",
    b"GET /healthz HTTP/1.1\r\nHost: t\r\n",
    b"PUT /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n{\"text\": \"",
], ids=["nothing", "half-headers", "half-body"])
async def test_a_request_that_does_not_arrive_in_time_is_closed(sent: bytes) -> None:
    """A client must send its request, headers and body, within request_timeout: uvicorn
    timed only a kept-alive connection that sent nothing more, so a client sending a
    header line (or a byte of body) now and then held its connection, and its share of
    max_connections, for ever (slowloris)."""
    server = HttpServer(_echo_app(), "127.0.0.1", 0, request_timeout=0.5)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(sent)
        assert await asyncio.wait_for(_closed_with_408(reader), 10)
        writer.close()
    finally:
        await server.stop()


async def test_the_next_request_on_a_kept_connection_is_timed_too() -> None:
    server = HttpServer(_echo_app(), "127.0.0.1", 0, request_timeout=0.5)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, _ = await asyncio.wait_for(_response(reader), 10)
        assert status == 200
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # within uvicorn's keep-alive timeout
        assert await asyncio.wait_for(_closed_with_408(reader), 10)
        writer.close()
    finally:
        await server.stop()


async def _status(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    status, _, _ = await asyncio.wait_for(_response(reader), 10)
    writer.close()
    return status


async def test_past_max_connections_a_request_gets_503() -> None:
    """Open connections are bounded (uvicorn's limit_concurrency): past max_connections a
    request is answered 503 and its connection closed; there was no bound at all."""
    server = HttpServer(_echo_app(), "127.0.0.1", 0, max_connections=3)
    await server.start()
    try:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        statuses = [await _status(server.port) for _ in range(20)]
        assert 503 in statuses  # the server may see the idle ones after the first request
        for _, writer in idle:
            writer.close()
        for _ in range(100):  # until the server has seen them go
            if await _status(server.port) == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("still 503 after the idle connections closed")
    finally:
        await server.stop()


async def test_past_max_connections_the_503_is_json_like_every_other_error() -> None:
    """MAX_CONNECTIONS connections opened for real, then one request more: its 503 has the
    admin API's error shape ({"detail": ...}, application/json). uvicorn answered it as
    text/plain "Service Unavailable", which a client parsing the API's errors choked on."""
    server = HttpServer(_echo_app(), "127.0.0.1", 0)
    await server.start()
    idle: list[asyncio.StreamWriter] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            idle.append((await asyncio.open_connection("127.0.0.1", server.port))[1])
        for _ in range(100):  # until the server has accepted every idle one
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /api/nothing HTTP/1.1\r\nHost: t\r\n\r\n")
            status, headers, body = await asyncio.wait_for(_response(reader), 10)
            writer.close()
            if status == 503:
                break
            await asyncio.sleep(0.05)
        assert status == 503
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "close"
        assert str(MAX_CONNECTIONS) in json.loads(body)["detail"]
    finally:
        for writer in idle:
            writer.close()
        await server.stop()


async def test_a_client_that_does_not_take_its_answer_is_cut_off() -> None:
    """A client that asks for a large answer and then reads nothing: the answer's rest
    waited in the server's buffer for as long as the client kept its window shut, and held
    the connection, its request and its share of max_connections. Now a connection on which
    nothing could be sent for request_timeout is aborted."""
    app = _echo_app()

    @app.get("/api/big")
    async def big() -> Response:
        return Response(b"x" * 32 * 1024 * 1024)

    server = HttpServer(app, "127.0.0.1", 0, max_connections=2, request_timeout=0.5)
    await server.start()
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /api/big HTTP/1.1\r\nHost: t\r\n\r\n")
        assert await asyncio.to_thread(sock.recv, 15) == b"HTTP/1.1 200 OK"  # then no more
        for _ in range(200):  # until the server has given up on it
            if await _status(server.port) == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("503 while the silent reader is connected")
        sock.close()
    finally:
        await server.stop()
