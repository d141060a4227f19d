"""relay-auth's HTTP admin API (beside gRPC, the same servicer methods; OpenAPI at /docs):

    GET    /api/leases        active POP/IMAP-before-SMTP leases (`mailyard lease list`), in
                              pages: ?limit= (at most 1,000) and ?page_token=; "next" is the
                              next page's path, null after the last
    POST   /api/leases        {"ip", "user", "ttl"?}: grant or refresh (`lease grant`); the
                              user must be a mailbox (404 otherwise)
    DELETE /api/leases/{ip}   end a lease now (`lease revoke`); 404 when there is none
    GET    /api/rules         the relay rules in force (`mailyard rules show`)
    PUT    /api/rules         {"text"}: validate and activate a tcp.smtp (`rules import`)

GET needs role read (or admin), the others admin (mailyard.core.http).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from google.protobuf.duration_pb2 import Duration
from pydantic import BaseModel, ConfigDict, Field

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core.http import Limit, PageToken, http_context, to_json, to_json_page
from mailyard.core.relaypolicy import MAX_LEASE_TTL
from mailyard.relay_auth.server import RelayAuthServicer


class NewLease(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is a 422, not ignored

    ip: str = Field(max_length=64)
    user: str = Field(max_length=1024)
    ttl: int | None = Field(default=None, gt=0, le=MAX_LEASE_TTL, description="seconds")


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=10_000_000)


def mount(app: FastAPI, servicer: RelayAuthServicer) -> None:
    @app.get("/api/leases")
    async def api_leases(request: Request, limit: Limit = 0, page_token: PageToken = ""
                         ) -> dict[str, Any]:
        return to_json_page(await servicer.ListLeases(pb.ListLeasesRequest(
            page_size=limit, page_token=page_token), http_context()), request)

    @app.post("/api/leases", status_code=201)
    async def api_grant(body: NewLease) -> dict[str, Any]:
        req = pb.GrantLeaseRequest(ip=body.ip, user=body.user)
        if body.ttl is not None:
            req.ttl.CopyFrom(Duration(seconds=body.ttl))
        return to_json(await servicer.GrantLease(req, http_context()))

    @app.delete("/api/leases/{ip}")
    async def api_revoke(ip: str) -> dict[str, Any]:
        answer = await servicer.RevokeLease(pb.RevokeLeaseRequest(ip=ip), http_context())
        if not answer.revoked:
            raise HTTPException(404, f"no lease for {ip}")
        return to_json(answer)

    @app.get("/api/rules")
    async def api_rules() -> dict[str, Any]:
        return to_json(await servicer.ShowRules(pb.ShowRulesRequest(), http_context()))

    @app.put("/api/rules")
    async def api_import(body: Rules) -> dict[str, Any]:
        return to_json(await servicer.ImportRules(pb.ImportRulesRequest(text=body.text),
                                                  http_context()))
