"""Read-only JSON for dashboards and scripts, beside /healthz /readyz /metrics.

    GET /api/stat                      qmail-qstat
    GET /api/messages?sender=&recipient=&domain=&state=&page_size=&page_token=  ("next": the
                                       next page's path, null after the last)
    GET /api/messages/{queue_id}       explain
    GET /api/status                    qmail-send's status line (cluster-wide)
    GET /api/history?id=&address=&since=&until=&limit=     `mailyard log` (ISO 8601 times)
    POST /api/actions/{retry|hold|release|delete|bounce}   {"queue_ids": [...]} or {"all": true}
Reads need role read (or admin), actions admin (mailyard.core.auth); OpenAPI at /docs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from google.protobuf.json_format import MessageToDict
from nats.js import JetStreamContext
from pydantic import BaseModel, ConfigDict, Field

from mailyard.api.history.v1 import history_pb2 as hpb
from mailyard.api.queue.v1 import queue_pb2 as pb
from mailyard.core.http import Limit, to_json_page
from mailyard.queue import history_search
from mailyard.queue.admin import (
    ACTIONS,
    BadList,
    BadSelection,
    Runtime,
    act,
    explain,
    listing,
    stat,
)
from mailyard.queue.engine import Queue
from mailyard.queue.history_feed import HistoryFeed
from mailyard.queue.state import STATE_NAMES

_STATE_BY_NAME = {name: value for value, name in STATE_NAMES.items()}


class Selection(BaseModel):
    """Which messages an action applies to: named ids, or all (then no ids)."""

    # a misspelt field is a 422: an ignored "recipent" would act on every recipient
    model_config = ConfigDict(extra="forbid")
    queue_ids: list[str] = Field(default_factory=list, max_length=10_000)
    all: bool = False
    recipient: str = ""


def _to_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)


def mount(app: FastAPI, runtime: Runtime, js: JetStreamContext,
          feed: HistoryFeed | None = None, wait: float = 1.0) -> None:
    def queue() -> Queue:
        if runtime.queue is None:
            raise HTTPException(503, "standby: this queue process is not the leader")
        return runtime.queue

    @app.get("/api/stat")
    async def api_stat() -> dict[str, Any]:
        return _to_dict(await stat(queue()))

    @app.get("/api/messages")
    async def api_list(request: Request, sender: str = "", recipient: str = "", domain: str = "",
                       state: str = "", page_size: Limit = 0,
                       page_token: str = "") -> dict[str, Any]:
        # page_size as every listing's ?limit= (core.http.Limit): negative or past int32
        # 422; 0 the default (100 here), past 1,000 1,000
        if state and state not in _STATE_BY_NAME:
            raise HTTPException(400, f"state must be one of {sorted(_STATE_BY_NAME)}")
        req = pb.ListRequest(sender=sender, recipient=recipient, domain=domain,
                             state=_STATE_BY_NAME.get(state, 0),  # type: ignore[arg-type]
                             page_size=page_size, page_token=page_token)
        try:
            return to_json_page(await listing(queue(), req), request)
        except BadList as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/api/messages/{queue_id}")
    async def api_explain(queue_id: str) -> dict[str, Any]:
        detail = await explain(queue(), queue_id)
        if detail is None:
            raise HTTPException(404, f"{queue_id} not in queue")
        return _to_dict(detail)

    @app.get("/api/status")
    async def api_status() -> dict[str, Any]:
        r = await stat(queue())
        return {"local": {"in_progress": r.local_in_progress, "limit": r.local_limit},
                "remote": {"in_progress": r.remote_in_progress, "limit": r.remote_limit},
                "line": f"status: local {r.local_in_progress}/{r.local_limit} "
                        f"remote {r.remote_in_progress}/{r.remote_limit}"}

    @app.post("/api/actions/{action}")
    async def api_action(action: str, body: Selection) -> dict[str, Any]:
        if action not in ACTIONS:
            raise HTTPException(404, f"no action {action!r}; one of {', '.join(ACTIONS)}")
        req = pb.SelectRequest(queue_ids=body.queue_ids, recipient=body.recipient,
                               all=body.all)
        try:
            return _to_dict(await act(queue(), action, req))
        except BadSelection as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/api/history")
    async def api_history(id: str = "", address: str = "", since: datetime | None = None,
                          until: datetime | None = None,
                          limit: int = Query(0, ge=0, le=history_search.MAX_LIMIT)
                          ) -> dict[str, Any]:
        req = hpb.SearchRequest(queue_id=id, address=address, limit=limit)
        for field, when in (("since", since), ("until", until)):
            if when is not None:  # a time without a zone is UTC
                try:
                    getattr(req, field).FromDatetime(
                        when if when.tzinfo else when.replace(tzinfo=UTC))
                except OverflowError:  # 9999-12-31T23:59-01:00 is past 9999 in UTC
                    raise HTTPException(400, f"{field} is outside the years 1 to 9999 in "
                                             "UTC") from None
        try:
            return _to_dict(await history_search.search(js, req, feed, wait))
        except history_search.BadRequest as exc:
            raise HTTPException(400, str(exc)) from None
