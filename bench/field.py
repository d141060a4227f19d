"""`make bench`, measured the way the field measures MTAs: Postfix's own C tools on both ends.

smtp-source is the client, smtp-sink the next hop, for Mailyard as `make run` starts it and for
the private peers ../shared/peers/postfix-peer (Postfix 3.7) and ../shared/peers/haraka-peer
(Haraka 3.3.4), in alternating rounds of one run; medians and ratios are printed. Modes:

  conn      one connection per message (smtp-source's default; how MX traffic arrives)
  reuse     connections reused (smtp-source -d)
  starttls  STARTTLS on every connection (bench.tlsload: smtp-source has no TLS); the peers
            are given a self-signed pair for it; Haraka is left out (the peer has no TLS)
  mixed     sizes 2 KB - 2 MB around a 30 KB median, 1-5 recipients, a tenth local: several
            smtp-source processes at once, one per (size, recipients, local) bucket

Each figure is end to end: from the first connection to the last message at the sink. A 4xx
or 5xx stops smtp-source (that is itself a finding, reported as the client's exit status).
Messages the sink got beyond those sent are reported as duplicates: counted alone, a message
sent twice would hide one never sent. For Mailyard the CPU each process spent per message is
reported too, so the next bottleneck is named; for every system, the whole machine's CPU per
message split into user, system (kernel), softirq and idle, so that what a system costs is
seen where it is spent (Postfix's is mostly kernel, Mailyard's mostly Python). Figures only:
nothing here asserts a speed.

    python -m bench.field [--modes conn,reuse,starttls,mixed] [--rounds 3] [--messages 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.proc import cpu_seconds, machine_split, machine_ticks
from mailyard.cli.platform import Platform, default_ingress_replicas, free_ports
from mailyard.core.natsserver import free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(os.environ.get("MAILYARD_PEERS", ROOT.parent / "shared" / "peers"))  # steering repo
RESULTS = ROOT / ".bench"
DATA = RESULTS / "field"  # a tree of its own: see DATA in bench/run.py for why
SESSIONS = 50
# mixed: (size in bytes, recipients, local, share of the messages); median 30 KB
MIXED = [(2_000, 1, False, 0.10), (8_000, 2, False, 0.15), (20_000, 1, False, 0.15),
         (30_000, 3, False, 0.15), (30_000, 1, True, 0.10), (60_000, 5, False, 0.15),
         (150_000, 2, False, 0.12), (600_000, 1, False, 0.06), (2_000_000, 4, False, 0.02)]


class Sink:
    """smtp-sink as the next hop; its running counter (-c) counts messages received."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", "-c", "-m", "1000", f"127.0.0.1:{self.port}", "1024"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.messages = 0
        threading.Thread(target=self._read, daemon=True).start()
        wait_port("127.0.0.1", self.port)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        pending = b""
        out = self.proc.stdout.fileno()
        while chunk := os.read(out, 65536):
            pending += chunk
            found = re.findall(rb"mesg=(\d+)", pending)
            if found:
                self.messages = int(found[-1])
            pending = pending[-64:]

    def wait(self, target: int, timeout: float, stall: float) -> float:
        """Until `target` messages arrived, `timeout` passed, or nothing came for `stall`
        seconds (after a client stopped early the target is never reached)."""
        deadline = time.monotonic() + timeout
        seen, since = self.messages, time.monotonic()
        while self.messages < target and time.monotonic() < deadline:
            if self.messages != seen:
                seen, since = self.messages, time.monotonic()
            elif time.monotonic() - since > stall:
                break
            time.sleep(0.02)
        return time.perf_counter()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


class System:
    name = ""

    def start(self, sink: Sink, tls: bool) -> int:  # returns the SMTP port
        raise NotImplementedError

    def expected(self, remote: int, local: int) -> int:
        """Messages the sink will see when `remote` go out and `local` stay here."""
        return remote + local

    def local_count(self) -> int:
        """Messages delivered into a mailbox here (the peers relay everything)."""
        return 0

    def cpu(self) -> dict[str, float]:
        return {}

    def stop(self) -> None:
        raise NotImplementedError


class Mailyard(System):
    """The platform as `make run` starts it (its defaults), relaying remote.test to the sink
    and keeping local.test in a mailbox (a catch-all, so numbered recipients land too)."""

    name = "mailyard"

    def __init__(self) -> None:
        self.platform: Platform | None = None

    def start(self, sink: Sink, tls: bool) -> int:
        DATA.mkdir(parents=True, exist_ok=True)
        self.platform = Platform(Path(tempfile.mkdtemp(prefix="mailyard-", dir=DATA)),
                                 ports=free_ports(),
                                 ingress_replicas=default_ingress_replicas())  # as `up`
        self.platform.start()
        for args in (("route", "set", "remote.test", f"127.0.0.1:{sink.port}"),
                     ("domain", "add", "local.test"),
                     ("user", "add", "box@local.test", "--password-stdin"),
                     ("catchall", "set", "local.test", "box@local.test")):
            subprocess.run([sys.executable, "-m", "mailyard.cli.main", *args], check=True,
                           input="bench-password-1\n", text=True, capture_output=True,
                           env={**os.environ, **self.platform.cli_env()})
        return self.platform.ports.smtp

    def expected(self, remote: int, local: int) -> int:
        return remote

    def pids(self) -> dict[str, int]:
        assert self.platform is not None
        pids = {name: run.proc.pid for name, run in self.platform.running.items()}
        if self.platform.nats.proc is not None:
            pids["nats-server"] = self.platform.nats.proc.pid
        return pids

    def cpu(self) -> dict[str, float]:
        seconds = {}
        for name, pid in self.pids().items():
            try:
                seconds[name] = cpu_seconds(pid)
            except OSError:
                continue
        return seconds

    def local_count(self) -> int:
        assert self.platform is not None
        new = self.platform.mail_dir / "local.test" / "box" / "Maildir" / "new"
        return len(os.listdir(new)) if new.exists() else 0

    def stop(self) -> None:
        if self.platform is not None:
            self.platform.stop()
            self.platform = None


class Peer(System):
    """A private Postfix or Haraka instance relaying everything to the sink."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.script = PEERS / f"{name}-peer"
        self.base = RESULTS / "peers" / name  # kept: Haraka installs itself there once
        self.env = {**os.environ, f"{name.upper()}_PEER_DIR": str(self.base)}

    def start(self, sink: Sink, tls: bool) -> int:
        port = free_port()
        subprocess.run([str(self.script), "start", str(port), f"127.0.0.1:{sink.port}"],
                       check=True, capture_output=True, timeout=900, env=self.env)
        if tls:
            self._tls()
        return port

    def _tls(self) -> None:
        """Postfix with a self-signed pair (the peer itself offers no TLS) of the kind
        Mailyard makes for itself (smtp_ingress/tls.py): ECDSA P-256. An RSA 2048 key, as
        this bench gave Postfix before, costs the server a few times more CPU per
        handshake, which flattered Mailyard."""
        conf = self.base / "etc"
        key, cert = conf / "key.pem", conf / "cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                        "/CN=peer.localdomain", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        subprocess.run(["postconf", "-c", str(conf), "-e", "smtpd_tls_security_level=may",
                        f"smtpd_tls_cert_file={cert}", f"smtpd_tls_key_file={key}"],
                       check=True)
        subprocess.run(["postfix", "-c", str(conf), "reload"], check=True, capture_output=True)
        time.sleep(1)  # reload is asynchronous: let master restart smtpd with the new config

    def stop(self) -> None:
        subprocess.run([str(self.script), "stop"], check=False, capture_output=True,
                       env=self.env)


@dataclass
class Run:
    system: str
    mode: str
    messages: int = 0
    delivered: int = 0
    seconds: float = 0.0
    client_status: list[int] = field(default_factory=list)
    extra: int = 0  # messages the sink got beyond those sent: duplicates, which can hide a loss
    cpu_us_per_msg: dict[str, float] = field(default_factory=dict)
    # the whole machine's CPU per message by kind (bench.proc.machine_split): where a
    # system spends what it costs, for Mailyard and the peers alike
    machine_us_per_msg: dict[str, float] = field(default_factory=dict)
    round: int = 0  # systems of one round ran one after the other: a paired comparison

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0


def source(port: int, messages: int, sessions: int, size: int, rcpts: int = 1,
           to: str = "sink@remote.test", reuse: bool = False) -> subprocess.Popen[bytes]:
    args = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-r", str(rcpts), "-f", "load@client.test", "-t", to, "-M", "client.test"]
    if reuse:
        args.append("-d")
    return subprocess.Popen([*args, f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def clients(mode: str, port: int, n: int) -> tuple[list[subprocess.Popen[bytes]], int, int]:
    """Start the load of one mode. Returns the clients, and messages going out / staying."""
    if mode in ("conn", "reuse"):
        return [source(port, n, SESSIONS, 1024, reuse=mode == "reuse")], n, 0
    if mode == "starttls":  # two client processes, as one Python process cannot keep up
        procs = [subprocess.Popen([sys.executable, "-m", "bench.tlsload", "127.0.0.1",
                                   str(port), str(half), str(SESSIONS // 2), "1024"],
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for half in (n // 2, n - n // 2)]
        return procs, n, 0
    procs, remote, local = [], 0, 0
    for size, rcpts, is_local, share in MIXED:
        count = max(1, round(n * share))
        sessions = max(1, round(SESSIONS * share))
        to = "box@local.test" if is_local else "sink@remote.test"
        procs.append(source(port, count, sessions, size, rcpts, to))
        local, remote = (local + count, remote) if is_local else (local, remote + count)
    return procs, remote, local


def measure(system: System, mode: str, n: int) -> Run:
    sink = Sink()
    run = Run(system.name, mode)
    target = 0
    try:
        port = system.start(sink, tls=mode == "starttls")
        before, machine = system.cpu(), machine_ticks()
        start = time.perf_counter()
        procs, remote, local = clients(mode, port, n)
        run.messages = remote + local
        for proc in procs:
            _, err = proc.communicate(timeout=1200)
            run.client_status.append(proc.returncode)
            if proc.returncode:
                print(f"  {system.name}/{mode}: client exit {proc.returncode}: "
                      f"{err.decode(errors='replace').strip()[:200]}", flush=True)
        target = system.expected(remote, local)
        failed = any(run.client_status)
        end = sink.wait(target, 600, stall=15 if failed else 120)
        stays = run.messages - target  # delivered into a mailbox, not to the sink
        deadline = time.monotonic() + (15 if failed else 300)
        while system.local_count() < stays and time.monotonic() < deadline:
            time.sleep(0.05)
        end = max(end, time.perf_counter()) if stays else end
        run.seconds = end - start
        run.delivered = min(sink.messages, target) + min(system.local_count(), stays)
        after = system.cpu()
        run.machine_us_per_msg = machine_split(machine, machine_ticks(), run.messages)
        run.cpu_us_per_msg = {k: (after[k] - before.get(k, 0.0)) * 1e6 / max(1, run.messages)
                              for k in after}
    finally:
        system.stop()  # what was still on its way reaches the sink meanwhile
        run.extra = max(0, sink.messages - target) if target else 0
        sink.stop()
    return run


def settle() -> None:
    """Each run starts on a quiet disk (see bench/run.py's settle)."""
    os.sync()
    time.sleep(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="conn,reuse,starttls,mixed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--peers", default="postfix,haraka")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("smtp-source"):
        print("bench.field needs root and Debian's postfix (smtp-source, smtp-sink)")
        return 2
    systems: list[System] = [Mailyard()]
    for name in filter(None, args.peers.split(",")):
        if (PEERS / f"{name}-peer").exists():
            systems.append(Peer(name))
        else:
            print(f"bench.field: no {PEERS / (name + '-peer')}: {name} left out "
                  "(MAILYARD_PEERS names the folder)", flush=True)
    runs: list[Run] = []
    for mode in args.modes.split(","):
        for number in range(1, args.rounds + 1):
            # alternate who goes first, so neither side always runs on a fresher disk
            order = systems if number % 2 else systems[::-1]
            for system in order:
                if mode == "starttls" and system.name == "haraka":
                    continue
                settle()
                run = measure(system, mode, args.messages)
                run.round = number
                runs.append(run)
                print(f"{mode:<9} round {number}  {system.name:<9} {run.delivered:>6}/"
                      f"{run.messages} in {run.seconds:7.2f} s  {run.rate:8.1f} msg/s  "
                      f"client exit {run.client_status}"
                      + (f"  {run.extra} DUPLICATES at the sink" if run.extra else ""),
                      flush=True)
    report = summarize(runs)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "field.json").write_text(json.dumps(
        {"runs": [r.__dict__ for r in runs], "medians": report}, indent=2))
    shutil.rmtree(DATA, ignore_errors=True)
    return 0


def summarize(runs: list[Run]) -> dict[str, dict[str, float]]:
    medians: dict[str, dict[str, float]] = {}
    for run in runs:
        medians.setdefault(run.mode, {})
    print("--- medians (msg/s end to end) and ratios")
    for mode, table in medians.items():
        for who in {r.system for r in runs if r.mode == mode}:
            table[who] = statistics.median(r.rate for r in runs
                                           if r.mode == mode and r.system == who)
        ratios = "  ".join(f"mailyard/{p} {table['mailyard'] / table[p]:.2f}x"
                           for p in sorted(table) if p != "mailyard" and table[p])
        rates = "  ".join(f"{who} {rate:.0f}" for who, rate in sorted(table.items()))
        print(f"{mode:<9} {rates}   {ratios}")
    paired = _paired(runs)
    if paired:
        # How far a median can move on these machines: the same ratio, round by round.
        print("--- each round's ratio (its systems ran one after the other)")
        for line in paired:
            print(line)
    for mode in medians:
        mine = [r for r in runs if r.mode == mode and r.system == "mailyard"]
        if mine:
            cpu = {k: statistics.median(r.cpu_us_per_msg.get(k, 0.0) for r in mine)
                   for k in mine[0].cpu_us_per_msg}
            print(f"{mode:<9} mailyard CPU us/msg: " + ", ".join(
                f"{k} {v:.0f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])))
    print("--- the machine's CPU per message by kind (us/msg, medians; every process in it)")
    for mode in medians:
        for who in sorted({r.system for r in runs if r.mode == mode}):
            splits = [r.machine_us_per_msg for r in runs
                      if r.mode == mode and r.system == who and r.machine_us_per_msg]
            if splits:
                print(f"{mode:<9} {who:<9} " + "  ".join(
                    f"{kind} {statistics.median(m[kind] for m in splits):.0f}"
                    for kind in splits[0]))
    return medians


def _paired(runs: list[Run]) -> list[str]:
    """Per mode and peer, Mailyard's rate over the peer's in each round where both ran."""
    lines = []
    for mode in dict.fromkeys(r.mode for r in runs):
        ours = {r.round: r.rate for r in runs if r.mode == mode and r.system == "mailyard"}
        for peer in sorted({r.system for r in runs if r.mode == mode} - {"mailyard"}):
            theirs = {r.round: r.rate for r in runs if r.mode == mode and r.system == peer}
            ratios = [ours[n] / theirs[n] for n in sorted(ours.keys() & theirs.keys())
                      if n and theirs[n]]
            if ratios:
                lines.append(f"{mode:<9} mailyard/{peer:<8} " + "  ".join(
                    f"{x:.2f}x" for x in ratios) + f"   (spread {max(ratios) - min(ratios):.2f})")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
