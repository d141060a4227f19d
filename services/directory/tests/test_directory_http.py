"""The directory's HTTP admin API (web.py) over real HTTP against `python -m
mailyard.directory` with a token table: every directory and control call the CLI makes, the
roles (401 without a token, 403 for read on a write), and the refusals as JSON (400, 404,
409, 422)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core import auth, bus
from mailyard.core.directory import record_key
from mailyard.core.natsserver import NatsServer, free_port
from mailyard.testing import ServiceProcess

Call = Callable[..., tuple[int, Any]]
LAST_PAGE = {"next_page_token": "", "next": None}  # what a listing's last page adds


@pytest.fixture
def api(nats_server: NatsServer, tmp_path: Path) -> Iterator[tuple[Call, dict[str, str]]]:
    tokens = auth.write_table(tmp_path / "tokens")
    grpc_port, http_port = free_port(), free_port()
    process = ServiceProcess("mailyard.directory", {
        "MAILYARD_DIRECTORY_NATS_URL": nats_server.url,
        "MAILYARD_DIRECTORY_GRPC_PORT": str(grpc_port),
        "MAILYARD_DIRECTORY_HTTP_PORT": str(http_port),
        "MAILYARD_DIRECTORY_TOKENS_FILE": str(tmp_path / "tokens"),
    }, tmp_path / "logs", http_port=http_port).start()

    def call(method: str, path: str, body: Any = None, token: str | None = tokens["admin"]
             ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/api{path}", data=data,
                                     method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (http://)
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    yield call, tokens
    assert process.stop() == 0, process.logs()


def test_directory_and_control_over_http(api: tuple[Call, dict[str, str]]) -> None:
    call, tokens = api
    read = tokens["read"]
    assert call("POST", "/domains", {"name": "Example.com"}) == (
        201, {"name": "example.com", "catch_all": "CATCH_ALL_ACTION_UNSPECIFIED",
              "catch_all_target": "", "alias_of": ""})
    status, user = call("POST", "/users", {"address": "joe@example.com",
                                           "password": "a long secret", "quota_bytes": 1000,
                                           "gecos": "Joe"})
    assert status == 201 and user["quota_bytes"] == "1000"
    assert user["password_hash"] == "*"  # noqa: S105 (redacted, never the hash)
    assert call("PUT", "/users/joe@example.com/password", {"password": "another secret"}
                )[0] == 200
    assert call("PUT", "/users/joe@example.com/quota", {"bytes": 5000, "messages": 10}
                )[1]["quota_messages"] == "10"
    assert call("PUT", "/users/joe@example.com/gecos", {"gecos": "Joe Q"})[1]["gecos"] == "Joe Q"
    status, users = call("GET", "/users?domain=example.com", token=read)
    assert status == 200 and [(u["address"], u["quota_bytes"], u["gecos"])
                              for u in users["mailboxes"]] == [
        ("joe@example.com", "5000", "Joe Q")]
    forward = call("PUT", "/users/joe@example.com/forward",
                   {"targets": ["joe@remote.org"], "keep_copy": True})[1]
    assert (forward["forward_to"], forward["keep_copy"]) == (["joe@remote.org"], True)
    assert call("DELETE", "/users/joe@example.com/forward")[1]["forward_to"] == []

    assert call("POST", "/aliases", {"address": "info@example.com",
                                     "targets": ["joe@example.com"]})[0] == 201
    assert call("GET", "/aliases", token=read)[1] == {
        "aliases": [{"address": "info@example.com", "targets": ["joe@example.com"]}],
        **LAST_PAGE}
    assert call("GET", "/resolve/info@example.com", token=read)[1]["kind"] == \
        "RESOLUTION_KIND_ALIAS"
    assert call("DELETE", "/aliases/info@example.com") == (200, {"deleted": True})

    assert call("PUT", "/domains/example.com/catchall",
                {"action": "deliver", "target": "joe@example.com"})[1]["catch_all_target"] == \
        "joe@example.com"
    assert call("PUT", "/domains/example.com/catchall", {"action": "bounce"})[1][
        "catch_all"] == "CATCH_ALL_ACTION_BOUNCE"
    assert call("GET", "/domains", token=read)[1]["domains"][0]["name"] == "example.com"

    # mailing lists, and listing them with their members
    assert call("POST", "/lists", {"address": "team@example.com", "owner": "joe@example.com",
                                   "members": ["a@x.org"]})[0] == 201
    assert call("POST", "/lists/team@example.com/members", {"member": "b@x.org"}
                )[1]["members"] == ["a@x.org", "b@x.org"]
    assert call("DELETE", "/lists/team@example.com/members/a@x.org")[1]["members"] == [
        "b@x.org"]
    team = {"address": "team@example.com", "owner": "joe@example.com", "members": ["b@x.org"],
            "posting": "POSTING_POLICY_OPEN", "posters": [],
            "subscription": "SUBSCRIPTION_POLICY_CLOSED"}
    assert call("GET", "/lists?domain=example.com", token=read) == (
        200, {"lists": [team], **LAST_PAGE})
    assert call("GET", "/lists/team@example.com", token=read) == (200, team)
    assert call("DELETE", "/lists/team@example.com") == (200, {"deleted": True})

    # control files
    status, file = call("PUT", "/control/databytes", {"text": "20000000\n"})
    assert status == 200 and file["name"] == "databytes" and file["version"]
    assert call("GET", "/control/databytes", token=read)[1]["text"] == "20000000\n"
    assert [f["name"] for f in call("GET", "/control", token=read)[1]["files"]] == [
        "databytes"]
    assert call("DELETE", "/control/databytes")[1]["name"] == "databytes"

    assert call("DELETE", "/users/joe@example.com") == (200, {"deleted": True})
    assert call("DELETE", "/domains/example.com") == (200, {"deleted": True})
    assert call("GET", "/domains", token=read) == (200, {"domains": [], **LAST_PAGE})


def test_http_refusals(api: tuple[Call, dict[str, str]]) -> None:
    call, tokens = api
    # access: no or unknown token 401, read may not write, other roles may not read
    assert call("GET", "/domains", token=None)[0] == 401
    assert call("GET", "/domains", token="x" * 40)[0] == 401
    status, body = call("POST", "/domains", {"name": "example.com"}, token=tokens["read"])
    assert status == 403 and "read" in body["detail"]
    assert call("GET", "/lists", token=tokens["ingress"])[0] == 403
    assert call("DELETE", "/control/databytes", token=tokens["read"])[0] == 403
    assert call("GET", "/domains")[1] == {"domains": [], **LAST_PAGE}  # nothing was written

    assert call("POST", "/domains", {"name": "example.com"})[0] == 201
    cases: list[tuple[str, str, Any, int, str]] = [
        # the service's own refusals, as the gRPC side gives them
        ("POST", "/domains", {"name": "example.com"}, 409, "already exists"),
        ("POST", "/domains", {"name": "not a domain"}, 400, ""),
        ("POST", "/domains", {"name": "example\n.org"}, 400, "not a valid domain"),
        ("POST", "/users", {"address": "ann@example.com", "password": "short"}, 400,
         "too short"),
        ("POST", "/users", {"address": "ann@nowhere.org", "password": "a long secret"}, 409,
         "does not exist"),
        ("DELETE", "/users/ghost@example.com", None, 404, "no mailbox"),
        ("PUT", "/users/ghost@example.com/quota", {"bytes": 1}, 404, "no mailbox"),
        ("GET", "/lists/none@example.com", None, 404, "no list"),
        ("GET", "/lists?domain=nowhere.org", None, 404, "no domain"),
        ("POST", "/lists", {"address": "l@example.com", "owner": ""}, 400, "owner"),
        ("PUT", "/domains/example.com/catchall", {"action": "deliver"}, 400, "target"),
        ("PUT", "/control/nonsense", {"text": "1\n"}, 400, ""),
        ("PUT", "/control/databytes", {"text": "-5\n"}, 400, "positive integer"),
        ("GET", "/control/databytes", None, 404, "not set"),
        ("DELETE", "/control/databytes", None, 404, "not set"),
        # bodies that are not the documented JSON: FastAPI's 422
        ("POST", "/users", {"address": "ann@example.com", "pasword": "a long secret"}, 422,
         ""),
        ("PUT", "/users/joe@example.com/quota", {"bytes": -1}, 422, ""),
        ("PUT", "/users/joe@example.com/quota", {"bytes": "lots"}, 422, ""),
        ("PUT", "/domains/example.com/catchall", {"action": "forward"}, 422, ""),
        ("POST", "/aliases", {"address": "a@example.com", "targets": []}, 422, ""),
        ("PUT", "/control/me", {}, 422, ""),
        # JSON may escape a lone surrogate, which no UTF-8 (and no protobuf string) holds
        ("POST", "/domains", {"name": "\ud800.example"}, 422, ""),
        ("PUT", "/users/joe@example.com/gecos", {"gecos": "Jo\udcffe"}, 422, ""),
    ]
    for method, path, body, status, words in cases:
        got, answer = call(method, path, body)
        assert got == status, (method, path, body, answer)
        assert "detail" in answer, answer
        if words:
            assert words in answer["detail"], (path, answer)
    assert call("GET", "/users")[1] == {"mailboxes": [], **LAST_PAGE}  # none was written
    assert call("GET", "/control")[1] == {"files": []}


def test_listings_in_pages_over_http(api: tuple[Call, dict[str, str]],
                                     nats_server: NatsServer) -> None:
    """?limit= and ?page_token=, the next page's link in "next" (null on the last page):
    following it gives every mailbox once, in order; a bad token is 400, a bad limit 422."""
    call, tokens = api
    assert call("POST", "/domains", {"name": "example.com"})[0] == 201
    addresses = [f"user{n}@example.com" for n in range(250)]
    asyncio.run(_put_mailboxes(nats_server.url, addresses))
    # a write through the API: the service's view has then caught up with the ones above
    assert call("POST", "/aliases", {"address": "info@example.com",
                                     "targets": ["user0@example.com"]})[0] == 201
    seen: list[str] = []
    path: str | None = "/users?domain=example.com&limit=100"
    pages = 0
    while path is not None:
        status, body = call("GET", path.removeprefix("/api"), token=tokens["read"])
        assert status == 200, body
        assert len(body["mailboxes"]) <= 100
        seen.extend(m["address"] for m in body["mailboxes"])
        assert bool(body["next_page_token"]) == (body["next"] is not None)
        path = body["next"]
        pages += 1
    assert pages == 3
    assert seen == sorted(addresses, key=lambda a: record_key("mailbox", a))
    status, body = call("GET", "/users?page_token=bogus")
    assert status == 400 and "page_token" in body["detail"]
    assert call("GET", "/users?limit=-1")[0] == 422
    assert call("GET", "/users?limit=lots")[0] == 422
    # past the maximum is the maximum, as over gRPC
    assert len(call("GET", "/users?limit=100000")[1]["mailboxes"]) == 250
    assert call("GET", f"/users?limit={2**31}")[0] == 422  # no int32: protobuf has no room
    assert call("GET", "/domains?limit=1")[1] == {
        "domains": [{"name": "example.com", "catch_all": "CATCH_ALL_ACTION_UNSPECIFIED",
                     "catch_all_target": "", "alias_of": ""}], **LAST_PAGE}


async def _put_mailboxes(nats_url: str, addresses: list[str]) -> None:
    """What the directory writes for each, straight into the bucket."""
    nc = await bus.connect(nats_url, "test")
    kv = await bus.ensure_kv(nc.jetstream(), bus.KV_DIRECTORY)
    await asyncio.gather(*(kv.put(record_key("mailbox", a),
                                  pb.Mailbox(address=a).SerializeToString())
                           for a in addresses))
    await nc.close()


def test_alias_domains_over_http(api: tuple[Call, dict[str, str]]) -> None:
    call, _ = api
    assert call("POST", "/domains", {"name": "example.com"})[0] == 201
    status, body = call("POST", "/domains", {"name": "alias.test", "alias_of": "example.com"})
    assert (status, body["name"], body["alias_of"]) == (201, "alias.test", "example.com")
    status, body = call("POST", "/domains", {"name": "x.test", "alias_of": "alias.test"})
    assert status == 409 and "itself an alias domain of example.com" in body["detail"]
    status, body = call("POST", "/users", {"address": "joe@alias.test",
                                           "password": "correct horse"})
    assert status == 409 and "alias domain" in body["detail"]
    status, body = call("DELETE", "/domains/example.com")
    assert status == 409 and "--with-aliases" in body["detail"]
    assert call("DELETE", "/domains/example.com?with_aliases=true") == (200, {"deleted": True})
    assert call("GET", "/domains")[1] == {"domains": [], **LAST_PAGE}


def test_recipient_delimiter_over_http(api: tuple[Call, dict[str, str]]) -> None:
    call, tokens = api
    assert call("GET", "/settings", token=tokens["read"]) == (200, {"recipient_delimiter": "+"})
    assert call("PUT", "/settings/recipient_delimiter", {"value": "-"},
                token=tokens["read"])[0] == 403
    assert call("PUT", "/settings/recipient_delimiter", {"value": "+-"}) == (
        200, {"recipient_delimiter": "+-"})
    status, body = call("PUT", "/settings/recipient_delimiter", {"value": "@"})
    assert status == 400 and "cannot separate an extension" in body["detail"]
    assert call("PUT", "/settings/recipient_delimiter", {"value": ""}) == (
        200, {"recipient_delimiter": ""})
    assert call("GET", "/settings") == (200, {"recipient_delimiter": ""})


def test_a_lists_posting_policy_over_http(api: tuple[Call, dict[str, str]]) -> None:
    call, tokens = api
    assert call("POST", "/domains", {"name": "example.com"})[0] == 201
    status, body = call("POST", "/lists", {"address": "news@example.com", "owner": "o@x.org",
                                           "posting": "members", "posters": ["ed@x.org"]})
    assert (status, body["posting"], body["posters"]) == (
        201, "POSTING_POLICY_MEMBERS", ["ed@x.org"])
    assert call("PUT", "/lists/news@example.com/posting", {"posting": "announce"},
                token=tokens["read"])[0] == 403
    status, body = call("PUT", "/lists/news@example.com/posting", {"posting": "announce"})
    assert (status, body["posting"], body["posters"]) == (200, "POSTING_POLICY_ANNOUNCE", [])
    assert call("PUT", "/lists/news@example.com/posting", {"posting": "moderated"})[0] == 422
    assert call("PUT", "/lists/none@example.com/posting", {"posting": "open"})[0] == 404


def test_a_lists_subscription_by_mail_over_http(api: tuple[Call, dict[str, str]]) -> None:
    """The lists' JSON showed a subscription that no HTTP route could set."""
    call, tokens = api
    assert call("POST", "/domains", {"name": "example.com"})[0] == 201
    status, body = call("POST", "/lists", {"address": "news@example.com", "owner": "o@x.org",
                                           "subscription": "confirm"})
    assert (status, body["subscription"]) == (201, "SUBSCRIPTION_POLICY_CONFIRM")
    assert call("PUT", "/lists/news@example.com/subscription", {"subscription": "closed"},
                token=tokens["read"])[0] == 403
    status, body = call("PUT", "/lists/news@example.com/subscription",
                        {"subscription": "closed"})
    assert (status, body["subscription"]) == (200, "SUBSCRIPTION_POLICY_CLOSED")
    assert call("PUT", "/lists/news@example.com/subscription",
                {"subscription": "moderated"})[0] == 422
    assert call("PUT", "/lists/none@example.com/subscription",
                {"subscription": "confirm"})[0] == 404
