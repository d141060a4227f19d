"""`make bench`: Mailyard's accept and end-to-end rates, side by side with Postfix.

1. accept: N messages of 1 KB over 50 sessions into smtp-ingress (durable 250s) with the
   queue and workers paused (the peer runs in hold mode), and the
   p99 from end of DATA to 250 at half that rate;
2. end to end: the same load relayed through a static route to a loopback sink;
3. the same two runs through ../shared/peers/postfix-peer (hold mode for accept), if
   Postfix can be installed; ratios printed;
4. idle connections: 10,000 open sessions held, ingress RSS;
5. the per-service benchmarks in bench/ (relay_check, queue_scale, remote_scale, sender_auth)
   if present.

Each figure is the median of --rounds alternating Mailyard / Postfix rounds (default 3),
every round on a fresh platform. Figures only: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.smtpload import LoadResult, run_load
from mailyard.cli.platform import Platform, free_ports
from mailyard.core.natsserver import free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT.parent / "shared" / "peers" / "postfix-peer"
RESULTS = ROOT / ".bench"
# Mailyard's data lives in a tree of its own, away from the peer's (under /tmp): on ext4
# without a journal a create scans past every inode deleted nearby in the last minute, and
# the peer deletes its whole instance (~10,000 files) right before the next Mailyard round.
# Measured: after 10,000 deletions in /tmp, 5,000 accepts cost smtp-ingress 1,120 instead of
# 644 us/msg. Kept until the end of the run (deleting them would do the same to the next).
DATA = RESULTS / "data"


def data_dir(prefix: str) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=DATA))


class Sink:
    def __init__(self, delay: float = 0.0) -> None:
        self.port = free_port()
        self.file = Path(tempfile.mkstemp(prefix="sink-count-")[1])
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.sink", str(self.port),
                                      str(self.file), str(delay)], cwd=ROOT)
        wait_port("127.0.0.1", self.port)

    def count(self) -> int:
        try:
            return int(self.file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def wait(self, target: int, timeout: float) -> float:
        start = time.perf_counter()
        while self.count() < target and time.perf_counter() - start < timeout:
            time.sleep(0.05)
        return time.perf_counter()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.file.unlink(missing_ok=True)


def cli(platform: Platform, *args: str, stdin: str = "") -> None:
    subprocess.run([sys.executable, "-m", "mailyard.cli.main", *args], input=stdin, text=True,
                   check=True, capture_output=True, env={**os.environ, **platform.cli_env()})


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def line(name: str, r: LoadResult) -> str:
    return (f"{name:<34} {r.sent:>6} ok {r.failed:>4} failed  {r.rate:>8.1f} msg/s  "
            f"p50 {r.percentile(50) * 1000:6.1f} ms  p99 {r.percentile(99) * 1000:6.1f} ms")


class Paused:
    """The queue and delivery workers stopped (SIGSTOP) while the block runs: what is
    accepted waits in JetStream and the spool, as mail waits in qmail's queue while
    qmail-send is down (`svc -d`) or in Postfix's hold queue. The peer runs in hold mode,
    so this measures the same thing: the durable accept path alone."""

    WORKERS = ("queue", "remote-delivery", "local-delivery")

    def __init__(self, platform: Platform) -> None:
        self.pids = [run.proc.pid for run in platform.running.values()
                     if run.spec.group in self.WORKERS]

    def __enter__(self) -> Paused:
        for pid in self.pids:
            os.kill(pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc: object) -> None:
        for pid in self.pids:
            os.kill(pid, signal.SIGCONT)


def mailyard_runs(n: int, conc: int, replicas: int, report: dict[str, object]) -> None:
    sink = Sink()
    data = data_dir("mailyard-bench-")
    platform = Platform(data, ports=free_ports(), ingress_replicas=replicas, dovecot=False, env={
        "smtp-ingress": {"MAX_CONNECTIONS": "12000", "MAX_PER_IP": "12000",
                         "LISTEN_BACKLOG": "4096", "LOG_LEVEL": "WARNING"},
        **{s: {"LOG_LEVEL": "WARNING"} for s in ("queue", "local-delivery", "remote-delivery")},
    })
    platform.start()
    try:
        cli(platform, "route", "set", "remote.test", f"127.0.0.1:{sink.port}")
        port = platform.ports.smtp
        warm = asyncio.run(run_load("127.0.0.1", port, 200, conc))
        sink.wait(200, 60)
        base = sink.count()
        with Paused(platform):
            accept = asyncio.run(run_load("127.0.0.1", port, n, conc))
            print(line(f"mailyard accept ({replicas} ingress)", accept), flush=True)
            time.sleep(5)  # a separate run: let the last one's disk writeback finish first
            half = asyncio.run(run_load("127.0.0.1", port, max(500, n // 2), conc,
                                        rate=accept.rate / 2))
            print(line(f"mailyard at half peak ({accept.rate / 2:.0f}/s)", half), flush=True)
        sink.wait(base + accept.sent + half.sent, 300)
        base = sink.count()
        # the same load while the queue and a remote worker deliver at the same time
        busy = asyncio.run(run_load("127.0.0.1", port, n, conc))
        print(line("mailyard accept while delivering", busy), flush=True)
        sink.wait(base + busy.sent, 300)
        # end to end: from the first message sent to the last one at the sink
        base = sink.count()
        start = time.perf_counter()
        e2e = asyncio.run(run_load("127.0.0.1", port, n, conc))
        end = sink.wait(base + n, 300)
        e2e_rate = (sink.count() - base) / (end - start)
        print(f"{'mailyard end to end (to sink)':<34} {sink.count() - base:>6} delivered"
              f"          {e2e_rate:>8.1f} msg/s", flush=True)
        report["mailyard"] = {
            "ingress_replicas": replicas, "accept_rate": accept.rate,
            "accept_p99_ms": accept.percentile(99) * 1000,
            "half_peak_rate": half.rate, "half_peak_p99_ms": half.percentile(99) * 1000,
            "accept_while_delivering_rate": busy.rate, "e2e_rate": e2e_rate,
            "errors": (accept.errors + half.errors + busy.errors + e2e.errors
                       + warm.errors)[:5]}
    finally:
        platform.stop()
        sink.stop()


def idle_run(count: int) -> dict[str, float]:
    """One ingress process (the target is per process) holding `count` idle sessions."""
    data = data_dir("mailyard-idle-")
    platform = Platform(data, ports=free_ports(), dovecot=False, env={
        "smtp-ingress": {"MAX_CONNECTIONS": str(count + 2000), "MAX_PER_IP": "12000",
                         "LISTEN_BACKLOG": "4096", "LOG_LEVEL": "WARNING"}})
    platform.start()
    try:
        return idle_connections(platform, count)
    finally:
        platform.stop()


def idle_connections(platform: Platform, count: int) -> dict[str, float]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1000), hard))
    pid = platform.running["smtp-ingress"].proc.pid
    before = rss_mb(pid)
    socks = []
    try:
        for i in range(count):
            s = socket.socket()
            # spread over 127.0.0.x sources so no one address hits a per-IP limit
            s.bind((f"127.0.{(i // 250) % 250}.{i % 250 + 2}", 0))
            s.connect(("127.0.0.1", platform.ports.smtp))
            socks.append(s)
        time.sleep(3)
        held = sum(1 for s in socks if _alive(s))
        after = rss_mb(pid)
    finally:
        for s in socks:
            s.close()
    print(f"{'idle connections':<34} {held:>6} held   ingress RSS {before:.0f} MB -> "
          f"{after:.0f} MB", flush=True)
    return {"held": held, "rss_mb_before": before, "rss_mb_after": after}


def _alive(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        data = s.recv(1024, socket.MSG_PEEK)
        return bool(data)  # greeting waiting, not closed
    except BlockingIOError:
        return True
    except OSError:
        return False


def postfix_runs(n: int, conc: int, report: dict[str, object]) -> None:
    if not PEER.exists() or os.geteuid() != 0:
        print("postfix: peer not available (needs root and ../shared/peers/postfix-peer)")
        return
    sink = Sink()
    port = free_port()
    try:
        subprocess.run([str(PEER), "start", str(port), f"127.0.0.1:{sink.port}", "hold"],
                       check=True, capture_output=True, timeout=600)
        asyncio.run(run_load("127.0.0.1", port, 200, conc))
        accept = asyncio.run(run_load("127.0.0.1", port, n, conc))
        print(line("postfix accept (hold)", accept), flush=True)
        subprocess.run([str(PEER), "start", str(port), f"127.0.0.1:{sink.port}"], check=True,
                       capture_output=True, timeout=120)
        base = sink.count()
        start = time.perf_counter()
        asyncio.run(run_load("127.0.0.1", port, n, conc))
        end = sink.wait(base + n, 300)
        e2e_rate = (sink.count() - base) / (end - start)
        print(f"{'postfix end to end (to sink)':<34} {sink.count() - base:>6} delivered"
              f"          {e2e_rate:>8.1f} msg/s", flush=True)
        report["postfix"] = {"accept_rate": accept.rate, "e2e_rate": e2e_rate}
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"postfix: could not run the peer: {exc}")
    finally:
        subprocess.run([str(PEER), "stop"], check=False, capture_output=True)
        sink.stop()


def settle() -> None:
    """Each system starts on a quiet disk: flush what the previous run left dirty and give
    its background work (writeback, Postfix's queue manager, a stopping nats-server) a
    moment, so neither side pays for the other's last run."""
    os.sync()
    time.sleep(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--ingress-replicas", type=int, default=min(2, os.cpu_count() or 1),
                        help="smtp-ingress processes sharing the port (default: one per "
                             "core, at most 2)")
    parser.add_argument("--skip-postfix", action="store_true")
    parser.add_argument("--only-core", action="store_true",
                        help="skip the per-service benchmarks")
    parser.add_argument("--rounds", type=int, default=3,
                        help="Mailyard and Postfix runs, alternating; medians are reported "
                             "(a shared 2-core VM varies a lot from run to run)")
    args = parser.parse_args()
    report: dict[str, object] = {"messages": args.messages, "concurrency": args.concurrency,
                                 "rounds": []}
    rounds: list[dict[str, object]] = []
    for number in range(1, args.rounds + 1):
        print(f"--- round {number} of {args.rounds}", flush=True)
        one: dict[str, object] = {}
        settle()
        mailyard_runs(args.messages, args.concurrency, args.ingress_replicas, one)
        if not args.skip_postfix:
            settle()
            postfix_runs(args.messages, args.concurrency, one)
        rounds.append(one)
    report["rounds"] = rounds
    report["idle"] = idle_run(10_000)
    print(f"--- medians of {len(rounds)} round(s)")
    for who in ("mailyard", "postfix"):
        runs: list[dict[str, object]] = [r[who] for r in rounds  # type: ignore[misc]
                                         if isinstance(r.get(who), dict)]
        if runs:
            med = {key: statistics.median(float(r[key]) for r in runs)  # type: ignore[arg-type]
                   for key, value in runs[0].items() if isinstance(value, int | float)}
            report[who] = med
            print(f"{who:<9} " + "  ".join(f"{k} {v:.1f}" for k, v in med.items()))
    my, pf = report.get("mailyard"), report.get("postfix")
    if isinstance(my, dict) and isinstance(pf, dict):
        print(f"ratio accept   mailyard/postfix: {my['accept_rate'] / pf['accept_rate']:.2f}x")
        print(f"ratio e2e      mailyard/postfix: {my['e2e_rate'] / pf['e2e_rate']:.2f}x")
    if not args.only_core:
        for name in ("relay_check", "remote_scale", "queue_scale", "sender_auth"):
            if (ROOT / "bench" / f"{name}.py").exists():
                print(f"--- bench.{name}", flush=True)
                subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT, check=False)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(report, indent=2))
    shutil.rmtree(DATA, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
