"""relay-auth's HTTP admin API (beside gRPC, same code; OpenAPI at /docs):

    GET /api/leases       active POP/IMAP-before-SMTP leases (`mailyard lease list`)
    GET /api/rules        the relay rules in force (`mailyard rules show`)
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core.http import http_context, to_json
from mailyard.relay_auth.server import RelayAuthServicer


def mount(app: FastAPI, servicer: RelayAuthServicer) -> None:
    @app.get("/api/leases")
    async def api_leases() -> dict[str, Any]:
        return to_json(await servicer.ListLeases(pb.ListLeasesRequest(), http_context()))

    @app.get("/api/rules")
    async def api_rules() -> dict[str, Any]:
        return to_json(await servicer.ShowRules(pb.ShowRulesRequest(), http_context()))
