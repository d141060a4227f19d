"""remote-delivery's HTTP admin API (beside gRPC Routing, same code; OpenAPI at /docs):

    GET /api/routes                           control/smtproutes, one entry per line
    GET /api/routes/explain?address=&probe=   Routing.Explain (`mailyard route explain`)
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from mailyard.api.routing.v1 import routing_pb2
from mailyard.core.control import ControlView
from mailyard.core.http import http_context, to_json
from mailyard.remote_delivery.explain import RoutingService


def mount(app: FastAPI, routing: RoutingService, control: ControlView) -> None:
    @app.get("/api/routes")
    async def api_routes() -> dict[str, Any]:
        return {"routes": control.lines("smtproutes")}

    @app.get("/api/routes/explain")
    async def api_explain(address: str, probe: bool = False) -> dict[str, Any]:
        request = routing_pb2.ExplainRequest(address=address, probe=probe)
        return to_json(await routing.Explain(request, http_context()))
