"""remote-delivery as real processes: a replica killed mid-transfer, Routing.Explain, and
STARTTLS to the next hop on each event loop a process can run on."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from remote_rig import Smtp, closed_port, results, server_tls

from mailyard.api.mail.v1.delivery_pb2 import CHANNEL_REMOTE, OUTCOME_DELIVERED, DeliveryJob
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.api.routing.v1 import routing_pb2, routing_pb2_grpc
from mailyard.core import bus
from mailyard.core.natsserver import NatsServer, free_port
from mailyard.core.spool import Spool
from mailyard.testing import DnsServer, ServiceProcess

MSG = b"Subject: long\r\n\r\nbody\r\n"


def replica(name: str, nats: NatsServer, spool: Spool, dns: DnsServer, logs: Path,
            **extra: str) -> ServiceProcess:
    """A remote-delivery process; settings as keyword arguments (ack_wait="" keeps the
    default)."""
    http = free_port()
    env = {"MAILYARD_REMOTE_NATS_URL": nats.url, "MAILYARD_REMOTE_SPOOL_DIR": str(spool.root),
           "MAILYARD_REMOTE_HTTP_PORT": str(http), "MAILYARD_REMOTE_INSTANCE": name,
           "MAILYARD_REMOTE_DNS_SERVER": dns.address, "MAILYARD_REMOTE_ME": "mx.ours.test",
           "MAILYARD_REMOTE_ACK_WAIT": "3", "MAILYARD_REMOTE_GRPC_PORT": "0",
           **{f"MAILYARD_REMOTE_{k.upper()}": v for k, v in extra.items()}}
    env = {k: v for k, v in env.items() if v}
    return ServiceProcess("mailyard.remote_delivery", env, logs, http_port=http)


async def job_for(spool: Spool, recipients: list[str],
                  queue_id: str = "01KILLTEST0000000000000001") -> DeliveryJob:
    stored = await spool.commit(Envelope(queue_id=queue_id, sender="a@ours.test",
                                         recipients=recipients), MSG)
    return DeliveryJob(job_id=f"{queue_id}.1", queue_id=stored.queue_id,
                       channel=CHANNEL_REMOTE, sender="a@ours.test", recipients=recipients,
                       domain=recipients[0].rpartition("@")[2], spool_path=stored.spool_path,
                       sha256=stored.sha256, size=stored.size, attempt=1)


async def test_replica_killed_mid_transfer(js: Any, nats_server: NatsServer, spool: Spool,  # type: ignore[no-untyped-def]
                                           dns_server: DnsServer, smtp_servers,
                                           tmp_path: Path) -> None:
    server = Smtp(hold_first=True).start()  # the first transfer hangs at the final dot
    smtp_servers.append(server)
    kv = await bus.ensure_kv(js, bus.KV_CONTROL)
    await kv.put("smtproutes", f"kill.test:127.0.0.1:{server.port}".encode())
    # Default settings: a dead replica's jobs must run again elsewhere within 15 s (with
    # a 90 s ack_wait they held the channel's slots for 90 s).
    first = replica("first", nats_server, spool, dns_server, tmp_path, ack_wait="").start()
    try:
        job = await job_for(spool, ["u@kill.test"])
        await bus.publish(js, bus.JOB_SUBJECT["remote"], job, msg_id=job.job_id)
        assert await asyncio.to_thread(server.in_data.wait, 20), first.logs()
        second = replica("second", nats_server, spool, dns_server, tmp_path, ack_wait="")
        await asyncio.to_thread(second.start)
        first.kill()  # mid-transfer: never acked, never reported
        killed = time.monotonic()
        [res] = await results(js, 1, timeout=40)  # generous on a loaded machine; was 90 s
        print(f"a killed replica's job was delivered again after "
              f"{time.monotonic() - killed:.1f} s")
        assert res.worker == "second", second.logs()
        assert res.results[0].outcome == OUTCOME_DELIVERED
        assert [m.rcpt_tos for m in server.messages] == [["u@kill.test"]]
        await asyncio.to_thread(second.stop)
    finally:
        first.kill()
        if "second" in locals():
            second.kill()


async def test_explain_over_grpc(js: Any, nats_server: NatsServer, spool: Spool,  # type: ignore[no-untyped-def]
                                 dns_server: DnsServer, smtp_servers, tmp_path: Path) -> None:
    server = Smtp().start()
    smtp_servers.append(server)
    down = closed_port()
    dns_server.zone.update({"ex.test": {"MX": ["20 b.ex.test.", "10 a.ex.test."]},
                            "a.ex.test": {"A": ["127.0.0.2"]},
                            "b.ex.test": {"A": ["127.0.0.1"]}})
    grpc_port = free_port()
    proc = replica("explain", nats_server, spool, dns_server, tmp_path,
                   grpc_port=str(grpc_port), smtp_port=str(server.port),
                   local_addresses=json.dumps(["127.0.0.9"])).start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = routing_pb2_grpc.RoutingStub(channel)
            out = await stub.Explain(routing_pb2.ExplainRequest(address="User@EX.test",
                                                                probe=True))
            assert out.domain == "ex.test" and out.source == "mx" and not out.error
            assert [h.host for h in out.hops] == ["a.ex.test", "b.ex.test"]
            assert [h.answers for h in out.hops] == [False, True]
            assert out.hops[1].greeting.startswith("127.0.0.1: 220")
            out = await stub.Explain(routing_pb2.ExplainRequest(address="nobody.test"))
            assert out.permanent and "5.1.2" in out.error
        assert down
    finally:
        proc.stop()


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_starttls_to_the_next_hop_in_a_process(js: Any, nats_server: NatsServer,  # type: ignore[no-untyped-def]
                                                     spool: Spool, dns_server: DnsServer,
                                                     smtp_servers, ca: trustme.CA,
                                                     tmp_path: Path, event_loop: str) -> None:
    """tls=verify against a trustme CA, twice: the second message goes over the same TLS
    session. The in-process tests run on asyncio's loop; a process runs on uvloop unless
    told otherwise, and its transports are not asyncio's classes."""
    server = Smtp(tls_context=server_tls(ca, "mx.tls.test")).start()
    smtp_servers.append(server)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    dns_server.zone.update({"tls.test": {"MX": ["10 mx.tls.test."]},
                            "mx.tls.test": {"A": ["127.0.0.1"]}})
    kv = await bus.ensure_kv(js, bus.KV_CONTROL)
    await kv.put("smtproutes", b"tls.test: tls=verify")
    proc = replica("tls", nats_server, spool, dns_server, tmp_path, smtp_port=str(server.port),
                   tls_ca_file=str(ca_file), event_loop=event_loop).start()
    try:
        for i in range(2):
            job = await job_for(spool, ["u@tls.test"], f"01TLSPROCESS{event_loop[:1].upper()}"
                                                       f"00000000000{i}")
            await bus.publish(js, bus.JOB_SUBJECT["remote"], job, msg_id=job.job_id)
            [res] = await results(js, 1, timeout=30)
            assert res.results[0].outcome == OUTCOME_DELIVERED, (res.results[0].reply,
                                                                 proc.logs())
        assert [m.tls for m in server.messages] == [True, True]
        assert f'"event_loop": "{event_loop}"' in proc.logs()
    finally:
        proc.stop()
