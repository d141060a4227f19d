"""Remote-delivery scale-out: deliveries/s for 1 and N replicas against a sink that takes
100 ms per transaction, and the highest concurrency the sink saw (must stay <= the
cluster-wide limit, concurrencyremote).

    .venv/bin/python bench/remote_scale.py [--jobs 400] [--replicas 4] [--limit 20]

Each replica runs at most limit/4 jobs at once (MAILYARD_REMOTE_MAX_IN_FLIGHT), so one
replica alone is bound by its own size and N replicas together by max_ack_pending =
concurrencyremote, which the sink's observed concurrency must never exceed.

Also printed: the CPU remote-delivery spends per job (utime + stime of every replica from
/proc over the run, divided by the jobs), the figure the end-to-end rate depends on when
every process shares two cores. `--delay 0` measures it without the sink's wait.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from bench.proc import cpu_seconds
from mailyard.api.mail.v1.delivery_pb2 import CHANNEL_REMOTE, DeliveryJob, DeliveryResult
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus
from mailyard.core.ids import new_queue_id
from mailyard.core.natsserver import NatsServer, free_port
from mailyard.core.spool import Spool
from mailyard.testing import ServiceProcess

MESSAGE = b"From: bench@ours.test\r\nSubject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * 26


class Sink:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.active = 0
        self.max_active = 0
        self.count = 0
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.active += 1
                sink.max_active = max(sink.max_active, sink.active)
                try:
                    await asyncio.sleep(sink.delay)
                    sink.count += 1
                    return "250 2.0.0 ok"
                finally:
                    sink.active -= 1

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     decode_data=False)

    def reset(self) -> None:
        self.active = self.max_active = self.count = 0


async def run(replicas: int, jobs: int, limit: int, sink: Sink, root: Path,
              ) -> tuple[float, int, float]:
    nats = NatsServer(root / f"js-{replicas}")
    nats.start(root / f"nats-{replicas}.log")
    spool = Spool(root / f"spool-{replicas}")
    spool.ensure()
    procs: list[ServiceProcess] = []
    nc = await bus.connect(nats.url, "bench")
    try:
        js = nc.jetstream()
        await bus.ensure_mail_streams(js)
        kv = await bus.ensure_kv(js, bus.KV_CONTROL)
        await kv.put("smtproutes", f":[127.0.0.1]:{sink.port} tls=none".encode())
        await kv.put("concurrencyremote", str(limit).encode())
        per_replica = max(1, limit // 4)  # one replica alone runs a quarter of the limit
        for i in range(replicas):
            http = free_port()
            env = {"MAILYARD_REMOTE_NATS_URL": nats.url,
                   "MAILYARD_REMOTE_SPOOL_DIR": str(spool.root),
                   "MAILYARD_REMOTE_HTTP_PORT": str(http), "MAILYARD_REMOTE_GRPC_PORT": "0",
                   "MAILYARD_REMOTE_INSTANCE": f"bench-{i}", "MAILYARD_REMOTE_ME": "ours.test",
                   "MAILYARD_REMOTE_MAX_IN_FLIGHT": str(per_replica),
                   "MAILYARD_REMOTE_PER_DESTINATION_LIMIT": str(limit),
                   "MAILYARD_REMOTE_LOG_LEVEL": "WARNING"}
            procs.append(ServiceProcess("mailyard.remote_delivery", env, root, http_port=http))
        for proc in procs:
            await asyncio.to_thread(proc.start)
        sub = await js.pull_subscribe(bus.RESULT_SUBJECT.format(channel="remote"),
                                      durable="bench-results", stream=bus.RESULTS_STREAM)
        prepared = []
        for _ in range(jobs):
            qid = new_queue_id()
            stored = await spool.commit(Envelope(queue_id=qid, sender="bench@ours.test",
                                                 recipients=["u@remote.test"]), MESSAGE)
            prepared.append(DeliveryJob(
                job_id=f"{qid}.1", queue_id=qid, channel=CHANNEL_REMOTE,
                sender="bench@ours.test", recipients=["u@remote.test"], domain="remote.test",
                spool_path=stored.spool_path, sha256=stored.sha256, size=stored.size,
                attempt=1))
        sink.reset()
        pids = [proc.proc.pid for proc in procs if proc.proc]
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        started = time.monotonic()
        await asyncio.gather(*(bus.publish(js, bus.JOB_SUBJECT["remote"], job,
                                           msg_id=job.job_id) for job in prepared))
        done = delivered = 0
        while done < jobs:
            try:
                msgs = await sub.fetch(batch=min(256, jobs - done), timeout=10)
            except TimeoutError:
                print("  timed out waiting for results", file=sys.stderr)
                break
            for msg in msgs:
                res = bus.decode(DeliveryResult, msg.data)
                delivered += sum(1 for r in res.results if r.outcome == 1)
                if res.results[0].outcome != 1 and done == 0:
                    print(f"  first failure: {res.results[0].reply}", file=sys.stderr)
                done += 1
                await msg.ack()
        elapsed = time.monotonic() - started
        cpu_per_job = (sum(cpu_seconds(pid) for pid in pids) - cpu_before) / max(1, done)
        if delivered != jobs:
            print(f"  only {delivered}/{jobs} delivered", file=sys.stderr)
        return delivered / elapsed, sink.max_active, cpu_per_job
    finally:
        for proc in procs:
            await asyncio.to_thread(proc.stop)
        await nc.close()
        nats.stop()
        spool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--limit", type=int, default=20, help="concurrencyremote")
    parser.add_argument("--delay", type=float, default=0.1, help="sink seconds per message")
    args = parser.parse_args()
    sink = Sink(args.delay)
    sink.controller.start()
    try:
        with tempfile.TemporaryDirectory(prefix="mailyard-bench-") as tmp:
            one, one_max, one_cpu = await run(1, args.jobs, args.limit, sink, Path(tmp))
            many, many_max, many_cpu = await run(args.replicas, args.jobs, args.limit, sink,
                                                 Path(tmp))
    finally:
        sink.controller.stop()
    print(f"remote-delivery scale-out: {args.jobs} jobs, sink {args.delay * 1000:.0f} ms, "
          f"concurrencyremote {args.limit}")
    print(f"  1 replica : {one:8.1f} deliveries/s   max concurrency at sink {one_max}   "
          f"CPU {one_cpu * 1e6:6.0f} us/job")
    print(f"  {args.replicas} replicas: {many:8.1f} deliveries/s   max concurrency at sink "
          f"{many_max}   CPU {many_cpu * 1e6:6.0f} us/job")
    ratio = many / one if one else 0.0
    print(f"  speed-up  : {ratio:.2f}x (target >= 3.5x)   cluster limit held: "
          f"{max(one_max, many_max) <= args.limit}")


if __name__ == "__main__":
    asyncio.run(main())
