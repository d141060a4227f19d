"""Access control on relay-auth's admin plane (mailyard.core.auth), over real gRPC: no token
is UNAUTHENTICATED, a role without the call is PERMISSION_DENIED; Authenticate (a password
oracle) only for ingress and the mailbox-access bridge, not even admin."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.api.relayauth.v1 import relayauth_pb2_grpc as rpc
from mailyard.core import auth
from mailyard.core.errors import SettingsError
from mailyard.core.grpcserver import GrpcServer
from mailyard.testing.grpccalls import status_of


@pytest.fixture
async def guarded(start_relay: Any, tmp_path: Path) -> tuple[Any, dict[str, str]]:
    tokens = auth.write_table(tmp_path / "tokens")
    return await start_relay(tokens_file=tmp_path / "tokens"), tokens


def _stub(relay: Any, token: str | None) -> rpc.RelayAuthStub:
    return rpc.RelayAuthStub(auth.aio_channel(relay.address, token))


AUTHN = pb.AuthenticateRequest(mechanism="PLAIN", username="u@x.test", password="pw",  # noqa: S106
                               client_ip="192.0.2.1")


async def test_no_token_is_unauthenticated(guarded: Any) -> None:
    relay, _ = guarded
    for token in (None, "not-a-known-token-but-long-enough-to-look-real-000"):
        stub = _stub(relay, token)
        assert await status_of(stub.Authenticate(AUTHN, timeout=10)) == \
            grpc.StatusCode.UNAUTHENTICATED
        assert await status_of(stub.ListLeases(pb.ListLeasesRequest(), timeout=10)) == \
            grpc.StatusCode.UNAUTHENTICATED
        assert await status_of(stub.ImportRules(pb.ImportRulesRequest(text="127.:allow\n"),
                                            timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
    # health stays open (probes, load balancers)
    health = health_pb2_grpc.HealthStub(grpc.aio.insecure_channel(relay.address))
    assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status == \
        health_pb2.HealthCheckResponse.SERVING


async def test_roles(guarded: Any) -> None:
    relay, tokens = guarded
    denied = grpc.StatusCode.PERMISSION_DENIED
    admin, read = _stub(relay, tokens["admin"]), _stub(relay, tokens["read"])
    ingress, bridge = _stub(relay, tokens["ingress"]), _stub(relay, tokens["bridge"])
    # the password oracle: only the services that log users in
    assert await status_of(admin.Authenticate(AUTHN, timeout=10)) == denied
    assert await status_of(read.Authenticate(AUTHN, timeout=10)) == denied
    for allowed in (ingress, bridge):
        assert await status_of(allowed.Authenticate(AUTHN, timeout=10)) == grpc.StatusCode.OK
    # relay checks: ingress, and operators (`mailyard relay check`), not the bridge
    for allowed in (ingress, read):
        assert await status_of(allowed.CheckClient(pb.CheckClientRequest(ip="127.0.0.1"),
                                               timeout=10)) == grpc.StatusCode.OK
    assert await status_of(bridge.CheckClient(pb.CheckClientRequest(ip="127.0.0.1"),
                                          timeout=10)) == denied
    # read-only: may look, may not change
    assert await status_of(read.ListLeases(pb.ListLeasesRequest(), timeout=10)) == \
        grpc.StatusCode.OK
    assert await status_of(read.ImportRules(pb.ImportRulesRequest(text="127.:allow\n"),
                                        timeout=10)) == denied
    assert await status_of(admin.ImportRules(pb.ImportRulesRequest(text="127.:allow\n"),
                                         timeout=10)) == grpc.StatusCode.OK
    # lease grants: the operator and the bridge, not ingress or read
    grant = pb.GrantLeaseRequest(ip="192.0.2.9")
    for role, stub in (("ingress", ingress), ("read", read)):
        assert await status_of(stub.GrantLease(grant, timeout=10)) == denied, role
    # past the check, the service itself answers (here: a lease needs its user)
    assert await status_of(bridge.GrantLease(grant, timeout=10)) == \
        grpc.StatusCode.INVALID_ARGUMENT


def test_no_tokens_only_on_loopback(tmp_path: Path) -> None:
    # 0.0.0.0 is the address refused: each of these fails before anything is bound
    for host in ("0.0.0.0", "localhost.example.net", "::1:5"):  # loopback by prefix only
        with pytest.raises(SettingsError, match="without TOKENS_FILE"):
            GrpcServer(host, 0, [])
    (tmp_path / "bad").write_text("admin short\n")
    with pytest.raises(SettingsError, match="line 1: token shorter"):
        GrpcServer("0.0.0.0", 0, [], tokens_file=tmp_path / "bad")
    with pytest.raises(SettingsError, match="tokens file"):
        GrpcServer("127.0.0.1", 0, [], tokens_file=tmp_path / "missing")


async def test_http_leases_and_rules(nats_server: Any, relay_process: Any, tmp_path: Path,
                                     js: Any, seed_users: Any) -> None:
    await seed_users(js, "alice@example.org")
    tokens = auth.write_table(tmp_path / "tokens")
    proc, _ = relay_process(nats_server.url, tokens_file=str(tmp_path / "tokens"))
    proc.start()
    base = f"http://127.0.0.1:{proc.http_port}/api"

    def call(method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, method=method, headers=headers)  # noqa: S310 (http:// only)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (http://)
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    admin, read = tokens["admin"], tokens["read"]
    assert call("GET", "/leases", None)[0] == 401
    assert call("GET", "/leases", tokens["ingress"])[0] == 403
    assert call("GET", "/leases", read) == (
        200, {"leases": [], "next_page_token": "", "next": None})
    status, rules = call("GET", "/rules", admin)
    assert status == 200 and rules["rules"]

    lease = {"ip": "192.0.2.7", "user": "alice@example.org", "ttl": 600}
    assert call("POST", "/leases", None, lease)[0] == 401
    assert call("POST", "/leases", read, lease)[0] == 403  # read may look, not grant
    status, granted = call("POST", "/leases", admin, lease)
    assert status == 201 and (granted["ip"], granted["user"], granted["source"]) == (
        "192.0.2.7", "alice@example.org", "manual")
    listed = call("GET", "/leases", read)[1]["leases"]
    assert [(x["ip"], x["user"]) for x in listed] == [("192.0.2.7", "alice@example.org")]
    # refusals, as JSON: the same checks as the gRPC call
    for body, status, words in (
            ({"ip": "192.0.2.8", "user": "ghost@example.org"}, 404, "no mailbox"),
            ({"ip": "nope", "user": "alice@example.org"}, 400, "not an IP address"),
            ({"ip": "192.0.2.8", "user": ""}, 400, "needs a user"),
            ({"ip": "192.0.2.8", "user": "alice@example.org", "ttl": 0}, 422, ""),
            ({"ip": "192.0.2.8", "user": "alice@example.org", "ttl": "soon"}, 422, ""),
            ({"ip": "192.0.2.8"}, 422, ""),
            ({"ip": "192.0.2.8", "user": "alice@example.org", "imported": True}, 422, "")):
        got, answer = call("POST", "/leases", admin, body)
        assert got == status and words in str(answer["detail"]), (body, answer)
    assert len(call("GET", "/leases", read)[1]["leases"]) == 1  # nothing else granted

    # in pages: ?limit= and ?page_token=, "next" the next page's path, null after the last
    for ip in ("192.0.2.10", "192.0.2.9"):
        assert call("POST", "/leases", admin, {**lease, "ip": ip})[0] == 201
    status, page = call("GET", "/leases?limit=2", read)
    assert status == 200 and [x["ip"] for x in page["leases"]] == ["192.0.2.7", "192.0.2.9"]
    assert page["next"] == f"/api/leases?limit=2&page_token={page['next_page_token']}"
    status, page = call("GET", page["next"].removeprefix("/api"), read)
    assert [x["ip"] for x in page["leases"]] == ["192.0.2.10"] and page["next"] is None
    status, page = call("GET", "/leases?page_token=nonsense", read)
    assert status == 400 and "page_token" in page["detail"]
    assert call("GET", "/leases?limit=-5", read)[0] == 422
    for ip in ("192.0.2.10", "192.0.2.9"):
        assert call("DELETE", f"/leases/{ip}", admin)[0] == 200

    assert call("DELETE", "/leases/192.0.2.7", read)[0] == 403
    assert call("DELETE", "/leases/192.0.2.7", admin) == (200, {"revoked": True})
    assert call("DELETE", "/leases/192.0.2.7", admin) == (404, {"detail":
                                                                "no lease for 192.0.2.7"})
    assert call("DELETE", "/leases/not-an-ip", admin)[0] == 400

    text = '127.:allow,RELAYCLIENT=""\n:allow\n'
    assert call("PUT", "/rules", read, {"text": text})[0] == 403
    status, imported = call("PUT", "/rules", admin, {"text": text})
    assert status == 200 and len(imported["rules"]) == 2
    status, refused = call("PUT", "/rules", admin, {"text": ':allow,RELAYCLIENT=""\n'})
    assert status == 400 and "open relay" in refused["detail"]
    assert call("GET", "/rules", read)[1]["version"] == imported["version"]
