"""mailyard.routing.v1.Routing: the help page's `dig mx` + `telnet mx 25` in one call.

Explain shows the route smtproutes or DNS gives right now, the hosts in the order delivery
would try them, and (probe=true) whether each greets on its SMTP port.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiosmtplib
import grpc

from mailyard.api.routing.v1 import routing_pb2, routing_pb2_grpc
from mailyard.core.addresses import to_ascii_domain
from mailyard.remote_delivery.deliver import Deliverer, reply_text
from mailyard.remote_delivery.lookup import Hop


def domain_of(address: str) -> str:
    """The A-label the queue routes the address by (core.addresses.to_ascii_domain)."""
    return to_ascii_domain(address.strip().rpartition("@")[2].strip("<>").rstrip("."))


class RoutingService(routing_pb2_grpc.RoutingServicer):
    def __init__(self, deliverer: Deliverer, probe_timeout: float = 5.0) -> None:
        self.deliverer = deliverer
        self.probe_timeout = probe_timeout

    async def Explain(self, request: Any, context: Any) -> routing_pb2.ExplainResponse:
        domain = domain_of(request.address)
        if not domain:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "address or domain needed")
        plan = await self.deliverer.plan(domain)
        response = routing_pb2.ExplainResponse(
            domain=domain, source=plan.source, error=plan.error, permanent=plan.permanent,
            route_line=plan.route.line if plan.route else "")
        hops = [routing_pb2.Hop(host=h.host, preference=h.preference, addresses=h.addresses,
                                port=h.port) for h in plan.hops]
        if request.probe:
            await asyncio.gather(*(self._probe(h, pb) for h, pb in zip(plan.hops, hops,
                                                                        strict=True)))
        response.hops.extend(hops)
        return response

    async def _probe(self, hop: Hop, out: routing_pb2.Hop) -> None:
        out.probed = True
        started = time.monotonic()
        for address in hop.addresses:
            smtp = aiosmtplib.SMTP(hostname=address, port=hop.port, start_tls=False,
                                   timeout=self.probe_timeout,
                                   local_hostname=self.deliverer.helo_name)
            try:
                reply = await smtp.connect()
                out.answers = True
                out.greeting = f"{address}: {reply_text(reply)}"
                try:
                    await asyncio.wait_for(smtp.quit(), self.probe_timeout)
                except Exception:
                    smtp.close()
                break
            except aiosmtplib.SMTPConnectResponseError as exc:
                out.greeting = f"{address}: {reply_text(exc)}"
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                out.greeting = f"{address}: {exc}"
            finally:
                smtp.close()
        out.probe_seconds = time.monotonic() - started
