"""`make bench`: what DKIM signing and the inbound sender checks cost smtp-ingress's accept rate.

The platform as `make run` starts it (one ingress process per core), its DNS pointed at a
loopback DNS server (NSD when installed, as .ci/run does: bench/nsd.py; else
mailyard.testing.DnsServer in a child process) and its queue and
delivery workers paused (bench.run.Paused: the durable accept path alone). Each mode sends
--messages messages of --size bytes to a local mailbox over --concurrency sessions with the
Python load generator (bench.smtpload; smtp-source cannot send a given message), the same
client for every mode:

  baseline          from 127.0.0.1, a relay client (one of ours); From: a domain without keys
  sign-rsa+ed       the same, From: a domain with an RSA 2048 and an Ed25519 key, both
                    signing (a domain during the move to Ed25519): two signatures a message
  sign-rsa          the same, a domain with one RSA 2048 key
  sign-ed25519      the same, a domain with one Ed25519 key
  inbound-repeat    from 127.0.0.2, not a relay client (tcp.smtp: only 127.0.0.1 relays):
                    SPF, null MX, DKIM, DMARC and the Authentication-Results header; every
                    message signed by its sender (RSA 2048, pre-signed before the round),
                    from 5 sender domains: the resolver cache's hit path
  inbound-distinct  the same, every message from a sender domain this platform has never
                    seen (--messages domains a round): every lookup a cache miss

Every sender domain publishes SPF (ip4:127.0.0.2 -all), an MX, its DKIM key and DMARC
p=reject, so all must pass: each mode's ingress counters (signed messages, SPF / DKIM /
DMARC passes) are checked against what was sent, and any 4xx/5xx is reported. Rounds
alternate the order of the modes, each round on a fresh platform; medians are printed with
the ratio to the baseline of the same round and the CPU per message of the ingress
processes (/proc utime + stime, as bench.field), the DNS server and the client.
Figures only: nothing here asserts a speed.

    python -m bench.sender_auth [--rounds 3] [--messages 1000] [--modes baseline,...]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import nsd, proc
from bench.nsd import NsdServer
from bench.run import Paused
from bench.smtpload import run_load
from mailyard.cli.platform import Platform, default_ingress_replicas, free_ports, spawn_supervised
from mailyard.core.dkimkeys import DkimKey, KeyDir

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / ".bench"
DATA = RESULTS / "sender-auth"  # a tree of its own: see DATA in bench/run.py for why
OURS, OUTSIDE = "127.0.0.1", "127.0.0.2"
RECIPIENT = "box@local.test"
SELECTOR = "s2048"  # the senders' key (one RSA 2048 key, published for every sender domain)
REPEAT_DOMAINS = 5
MODES = ("baseline", "sign-rsa+ed", "sign-rsa", "sign-ed25519", "inbound-repeat",
         "inbound-distinct")
# From: domain of each relay mode, and the keys `mailyard dkim keygen` gives it
SIGNING = {"baseline": ("plain.test", ()), "sign-rsa+ed": ("both.test", ("rsa", "ed25519")),
           "sign-rsa": ("rsa.test", ("rsa",)), "sign-ed25519": ("ed.test", ("ed25519",))}

DNS_CHILD = """
import json, sys, threading
from mailyard.testing import DnsServer
server = DnsServer(json.load(open(sys.argv[1])))
server.negative_ttl = 300  # a real zone's "no such name" is kept by the resolver
server.start()
print(server.port, flush=True)
threading.Event().wait()
"""


def message(sender: str, index: int, size: int) -> bytes:
    """A plain-text message of about `size` bytes with the headers real mail carries."""
    domain = sender.rpartition("@")[2]
    head = (f"From: Sender <{sender}>\r\nTo: Box <{RECIPIENT}>\r\nSubject: figures {index}\r\n"
            "Date: Fri, 04 Dec 2026 04:00:00 +0000\r\n"
            f"Message-ID: <bench-{index}@{domain}>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    line = b"a line of body text, as people write them, in a message of some size\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


class SenderKey:
    """One RSA 2048 key that every outside sender domain signs with (each publishes it under
    its own name). Signing goes through smtp-ingress's sign() (dkimpy, OpenSSL for the RSA
    step), so pre-signing thousands of messages takes seconds, not minutes."""

    def __init__(self, folder: Path) -> None:
        keys = KeyDir(folder)
        keys.create("sender.test", SELECTOR, "rsa")
        from mailyard.core.dkim_sign import Signer  # registers the key with OpenSSL
        self.signer = Signer(folder)
        [self.key] = self.signer.keys_for("sender.test")

    def for_domain(self, domain: str) -> DkimKey:
        return dataclasses.replace(self.key, domain=domain)

    def sign(self, body: bytes, domain: str) -> bytes:
        from mailyard.core.dkim_sign import sign
        return sign(body, [self.for_domain(domain)]) + body


def sender_zone(domains: list[str], key: SenderKey) -> dict[str, dict[str, list[str]]]:
    """SPF, MX, DKIM key and DMARC p=reject of every outside sender domain."""
    record = key.key.public_record
    txt = " ".join(f'"{record[i:i + 255]}"' for i in range(0, len(record), 255))
    zone: dict[str, dict[str, list[str]]] = {}
    for domain in domains:
        zone[domain] = {"TXT": [f'"v=spf1 ip4:{OUTSIDE} -all"'], "MX": [f"10 mx.{domain}."]}
        zone[f"{SELECTOR}._domainkey.{domain}"] = {"TXT": [txt]}
        zone[f"_dmarc.{domain}"] = {"TXT": ['"v=DMARC1; p=reject"']}
    return zone


class DnsChild:
    """The Python loopback DNS server in a process of its own, so its CPU is neither the
    client's nor hidden in it (its CPU per message is reported); NSD when installed."""

    def __init__(self, zone: dict[str, dict[str, list[str]]], folder: Path) -> None:
        path = folder / "zone.json"
        path.write_text(json.dumps(zone))
        # supervised: it gets SIGTERM if this process dies (a crashed run left it behind)
        self.proc = spawn_supervised([sys.executable, "-c", DNS_CHILD, str(path)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     cwd=ROOT)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def dns_server(zone: dict[str, dict[str, list[str]]], folder: Path) -> DnsChild | NsdServer:
    """NSD when installed (as a mail server asks a resolver in C), else the Python server."""
    return NsdServer(zone, folder) if nsd.available() else DnsChild(zone, folder)


def cpu_seconds(pid: int) -> float:
    """As bench.proc's, 0 for a process that is gone."""
    try:
        return proc.cpu_seconds(pid)
    except OSError:
        return 0.0


def counters(platform: Platform) -> dict[str, float]:
    """smtp-ingress's sender-auth and signing counters, summed over its processes."""
    out: dict[str, float] = {}
    for run in platform.running.values():
        if run.spec.group != "smtp-ingress":
            continue
        url = f"http://127.0.0.1:{run.spec.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            if line.startswith(("mailyard_smtp_dkim_sign_total{",
                                "mailyard_smtp_sender_auth_total{",
                                "mailyard_smtp_messages_accepted_total{")):
                name, value = line.rsplit(" ", 1)
                out[name] = out.get(name, 0.0) + float(value)
    return out


def expected(mode: str, sent: int) -> dict[str, float]:
    """What the counters must have grown by when `sent` messages of a mode were accepted."""
    if mode == "baseline":
        return {'mailyard_smtp_dkim_sign_total{result="no_key"}': sent}
    if mode.startswith("sign-"):
        return {'mailyard_smtp_dkim_sign_total{result="signed"}': sent}
    return {f'mailyard_smtp_sender_auth_total{{mechanism="{m}",result="pass"}}': sent
            for m in ("spf", "dkim", "dmarc")}


@dataclass
class Measured:
    mode: str
    round: int
    sent: int = 0
    failed: int = 0
    rate: float = 0.0
    p99_ms: float = 0.0
    ingress_ms: float = 0.0   # CPU of all smtp-ingress processes per message
    dns_ms: float = 0.0       # CPU of the loopback DNS server per message
    client_ms: float = 0.0    # CPU of the load generator (this process) per message
    errors: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)  # counters that did not add up


class Round:
    """One fresh platform, its DNS zone and the messages every mode sends in it."""

    def __init__(self, number: int, args: argparse.Namespace, key: SenderKey) -> None:
        self.number, self.args, self.key = number, args, key
        n, warm = args.messages, args.warmup
        self.repeat = [f"r{i}.repeat.test" for i in range(REPEAT_DOMAINS)]
        # never seen by this platform: one domain per message, warm-up included
        self.distinct = [f"d{i}.round{number}.distinct.test" for i in range(n + warm)]
        self.folder = Path(tempfile.mkdtemp(prefix=f"round{number}-", dir=DATA))
        self.signed: dict[str, list[tuple[str, bytes]]] = {}
        started = time.perf_counter()
        for mode, domains in (("inbound-repeat", self.repeat),
                              ("inbound-distinct", self.distinct)):
            if mode in args.modes:
                self.signed[mode] = [self._outside(domains[i % len(domains)], i)
                                     for i in range(n + warm)]
        if self.signed:
            print(f"  round {number}: {sum(map(len, self.signed.values()))} messages "
                  f"pre-signed in {time.perf_counter() - started:.1f} s", flush=True)
        self.dns = dns_server(sender_zone(self.repeat + self.distinct, key), self.folder)
        self.platform = Platform(self.folder / "data", ports=free_ports(),
                                 ingress_replicas=default_ingress_replicas(), dovecot=False,
                                 env={"smtp-ingress": {"DNS_SERVERS": f"127.0.0.1:{self.dns.port}",
                                                       "MAX_PER_IP": "1000"},
                                      "remote-delivery": {"DNS_SERVER":
                                                          f"127.0.0.1:{self.dns.port}"}})

    def _outside(self, domain: str, index: int) -> tuple[str, bytes]:
        sender = f"news@{domain}"
        return sender, self.key.sign(message(sender, index, self.args.size), domain)

    def start(self) -> None:
        try:
            # our domains' keys, as an operator makes them (both types of a domain sign)
            dkim_dir = str(self.folder / "data" / "dkim")
            for domain, types in SIGNING.values():
                for key_type in types:
                    self.cli("dkim", "--dir", dkim_dir, "keygen", domain, "--type", key_type,
                             "--selector", f"{key_type[:3]}1")
            self.platform.start()
            self.cli("domain", "add", "local.test")
            self.cli("user", "add", RECIPIENT, "--password-stdin", stdin="bench-password-1\n")
            # only 127.0.0.1 relays; 127.0.0.2 is the outside world
            self.cli("rules", "import", "-", stdin=f'{OURS}:allow,RELAYCLIENT=""\n:allow\n')
        except BaseException:
            self.stop()
            raise

    def cli(self, *args: str, stdin: str = "") -> None:
        done = subprocess.run([sys.executable, "-m", "mailyard.cli.main", *args], input=stdin,
                              text=True, capture_output=True, check=False,
                              env={**os.environ, **self.platform.cli_env()})
        if done.returncode:
            raise RuntimeError(f"mailyard {' '.join(args)}: {done.stderr.strip()}")

    def load(self, mode: str) -> tuple[str, Callable[[int], tuple[str, bytes]]]:
        """(client address, message maker) of a mode."""
        if mode in self.signed:
            signed = self.signed[mode]
            return OUTSIDE, lambda i: signed[i]
        sender = f"user@{SIGNING[mode][0]}"
        body = message(sender, 0, self.args.size)
        return OURS, lambda i: (sender, body)

    def measure(self, mode: str) -> Measured:
        args = self.args
        source, make = self.load(mode)
        port = self.platform.ports.smtp
        # the first messages of a mode (code paths, connections; a different slice of
        # the message list, so inbound-distinct's measured domains stay unseen)
        warm = asyncio.run(run_load("127.0.0.1", port, args.warmup,
                                    min(args.concurrency, max(1, args.warmup)),
                                    recipient=RECIPIENT,
                                    given=lambda i: make(args.messages + i), source=source))
        os.sync()
        time.sleep(args.pause)
        ingress = [r.proc.pid for r in self.platform.running.values()
                   if r.spec.group == "smtp-ingress"]
        before = counters(self.platform)
        cpu0 = sum(cpu_seconds(p) for p in ingress), self.dns.cpu_seconds(), \
            time.process_time()
        result = asyncio.run(run_load("127.0.0.1", port, args.messages, args.concurrency,
                                      recipient=RECIPIENT, given=make, source=source))
        cpu1 = sum(cpu_seconds(p) for p in ingress), self.dns.cpu_seconds(), \
            time.process_time()
        after = counters(self.platform)
        per = 1000 / max(1, result.sent)
        out = Measured(mode, self.number, result.sent, result.failed + warm.failed,
                       result.rate, result.percentile(99) * 1000,
                       (cpu1[0] - cpu0[0]) * per, (cpu1[1] - cpu0[1]) * per,
                       (cpu1[2] - cpu0[2]) * per, (warm.errors + result.errors)[:5])
        for name, want in expected(mode, result.sent).items():
            got = after.get(name, 0.0) - before.get(name, 0.0)
            if got != want:
                out.unverified.append(f"{name} grew by {got:.0f}, not {want}")
        return out

    def stop(self) -> None:
        self.platform.stop()
        self.dns.stop()


def rounds(args: argparse.Namespace, key: SenderKey) -> Iterator[Measured]:
    modes = list(args.modes)
    for number in range(1, args.rounds + 1):
        print(f"--- round {number} of {args.rounds}", flush=True)
        one = Round(number, args, key)
        one.start()
        try:
            shift = (number - 1) % len(modes)  # every mode takes its turn at going first
            with Paused(one.platform):
                for mode in modes[shift:] + modes[:shift]:
                    measured = one.measure(mode)
                    print(f"{mode:<17} round {number}  {measured.sent:>6} ok "
                          f"{measured.failed:>4} failed  {measured.rate:8.1f} msg/s  "
                          f"p99 {measured.p99_ms:6.1f} ms  ingress CPU "
                          f"{measured.ingress_ms:5.2f} ms/msg  dns {measured.dns_ms:5.2f}  "
                          f"client {measured.client_ms:5.2f}", flush=True)
                    for problem in measured.errors + measured.unverified:
                        print(f"  {mode}: {problem}", flush=True)
                    yield measured
        finally:
            one.stop()


def summarize(runs: list[Measured], modes: list[str]) -> dict[str, dict[str, float]]:
    """Medians per mode; the ratio is the median of each round's mode / baseline."""
    base = {r.round: r.rate for r in runs if r.mode == "baseline"}
    table: dict[str, dict[str, float]] = {}
    load = os.getloadavg()
    print(f"--- medians of {max((r.round for r in runs), default=0)} round(s); "
          f"load average now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'mode':<17} {'msg/s':>8} {'ratio':>6} {'ingress ms/msg':>15} {'dns ms/msg':>11} "
          f"{'client ms/msg':>14} {'p99 ms':>7} {'4xx/5xx':>8}")
    for mode in modes:
        mine = [r for r in runs if r.mode == mode]
        if not mine:
            continue
        ratios = [r.rate / base[r.round] for r in mine if base.get(r.round)]
        row = {"rate": statistics.median(r.rate for r in mine),
               "ratio": statistics.median(ratios) if ratios else float("nan"),
               "ingress_ms": statistics.median(r.ingress_ms for r in mine),
               "dns_ms": statistics.median(r.dns_ms for r in mine),
               "client_ms": statistics.median(r.client_ms for r in mine),
               "p99_ms": statistics.median(r.p99_ms for r in mine),
               "failed": sum(r.failed for r in mine),
               "unverified": sum(len(r.unverified) for r in mine)}
        table[mode] = row
        print(f"{mode:<17} {row['rate']:8.1f} {row['ratio']:6.2f} {row['ingress_ms']:15.2f} "
              f"{row['dns_ms']:11.2f} {row['client_ms']:14.2f} {row['p99_ms']:7.1f} "
              f"{row['failed']:8.0f}" + ("  COUNTERS DID NOT ADD UP" if row["unverified"]
                                          else ""))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=1000, help="per mode and round")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured, before each mode")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--size", type=int, default=4096, help="bytes per message (unsigned)")
    parser.add_argument("--pause", type=float, default=2.0,
                        help="seconds between modes (the last one's disk writeback)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=Path, default=RESULTS / "sender_auth.json")
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown or args.messages < 1 or args.warmup < 1 or args.rounds < 1:
        parser.error(f"unknown mode(s) {unknown}; known: {', '.join(MODES)}" if unknown
                     else "--messages, --warmup and --rounds must be at least 1")
    DATA.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"bench.sender_auth: {args.messages} messages of {args.size} bytes per mode, "
          f"{args.concurrency} sessions, {default_ingress_replicas()} ingress process(es), "
          f"DNS: {'NSD' if nsd.available() else 'the Python test server'}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    try:
        key = SenderKey(Path(tempfile.mkdtemp(prefix="sender-key-", dir=DATA)))
        runs = list(rounds(args, key))
        table = summarize(runs, args.modes)
    finally:
        shutil.rmtree(DATA, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "messages": args.messages, "size": args.size, "concurrency": args.concurrency,
        "load_before": load, "load_after": os.getloadavg(), "medians": table,
        "runs": [dataclasses.asdict(r) for r in runs]}, indent=2))
    bad = sum(r.failed + len(r.unverified) for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
