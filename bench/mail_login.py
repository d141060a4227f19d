"""IMAP/POP3 logins through Dovecot and the login bridge: latency of N logins at once, and
the POP-before-SMTP lease round trip.

    python -m bench.mail_login [--logins 20] [--rounds 3]   (root: Dovecot's mail user)

Starts the platform as `mailyard up` does (Platform with Dovecot, free loopback ports, a
temporary data folder), adds one domain and --logins mailboxes, then per round: every
mailbox logs in over POP3 at the same moment from 127.0.0.1 (Dovecot counts its own address
as secure, so no STLS: the figure is the login, not the TLS handshake); latency is from
connect to the +OK of PASS, and the CPU the round cost each process (children included, from
/proc) per login. Round 1 is every mailbox's first login; later rounds are the same logins
again, which relay-auth remembers for AUTH_CACHE_TTL (run with
MAILYARD_RELAYAUTH_AUTH_CACHE_TTL=0 for every round to pay the argon2id check). Lease round
trip: a POP3 login (STLS) from 127.0.0.2, which tcp.smtp does not let relay, then a new SMTP
connection from 127.0.0.2 whose RCPT to a remote domain is accepted; reported: login alone,
and login-to-relaying. Figures only."""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.proc import tree_cpu_seconds
from mailyard.api.relayauth.v1 import relayauth_pb2 as ra
from mailyard.api.relayauth.v1 import relayauth_pb2_grpc as ra_rpc
from mailyard.cli.platform import Platform, free_ports
from mailyard.core import auth

OUTSIDER = "127.0.0.2"


class _POP3From(poplib.POP3):
    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=60)

    def _create_socket(self, timeout: Any) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


def _cli(platform: Platform, *args: str, stdin: str = "") -> None:
    env = {**os.environ, **platform.cli_env()}
    subprocess.run([sys.executable, "-m", "mailyard.cli.main", *args], input=stdin, env=env,
                   text=True, check=True, capture_output=True, timeout=60)


def _login(port: int, user: str, password: str) -> float:
    started = time.perf_counter()
    client = poplib.POP3("127.0.0.1", port, timeout=60)
    client.user(user)
    client.pass_(password)
    took = time.perf_counter() - started
    client.quit()
    return took


def _cpu(platform: Platform) -> dict[str, float]:
    return {name: tree_cpu_seconds(svc.proc.pid) for name, svc in platform.running.items()}


def _relays(port: int) -> bool:
    with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(OUTSIDER, 0)) as smtp:
        smtp.ehlo("bench.test")
        smtp.mail("bench@client.test")
        code, _ = smtp.rcpt("friend@elsewhere.example")
        smtp.rset()
    return code == 250


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logins", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="mailyard-bench-mail-"))
    data.chmod(0o711)
    platform = Platform(data / "var", ports=free_ports())
    if not platform.dovecot:
        print("Dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)")
        return 2
    platform.start()
    try:
        # The admin plane wants the platform's admin token (mailyard.core.auth).
        token = auth.read_token(platform.tokens_file, "admin")
        relay_auth = f"127.0.0.1:{platform.ports.relayauth_grpc}"
        with auth.channel(relay_auth, token) as channel:
            ra_rpc.RelayAuthStub(channel).ImportRules(ra.ImportRulesRequest(
                text='127.0.0.1:allow,RELAYCLIENT=""\n:allow\n'))
        _cli(platform, "domain", "add", "bench.test")
        users = [f"user{i}@bench.test" for i in range(args.logins)]
        for user in users:
            _cli(platform, "user", "add", user, "--password-stdin", stdin="bench-password\n")
        port = platform.ports.pop3
        for round_no in range(1, args.rounds + 1):
            before = _cpu(platform)
            with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
                took = sorted(pool.map(lambda u: _login(port, u, "bench-password"), users))
            time.sleep(1)  # let the mail processes end and be counted
            spent = {k: (v - before.get(k, 0.0)) * 1000 / len(users)
                     for k, v in _cpu(platform).items()}
            cpu = ", ".join(f"{k} {spent[k]:.1f}" for k in ("relay-auth", "dovecot", "mail-access")
                            if k in spent)
            print(f"round {round_no}: {len(users)} POP3 logins at once: "
                  f"median {statistics.median(took) * 1000:.0f} ms, "
                  f"max {took[-1] * 1000:.0f} ms, load {os.getloadavg()[0]:.1f}; "
                  f"CPU ms per login: {cpu}, all {sum(spent.values()):.1f}", flush=True)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the platform's own self-signed pair
        for _ in range(args.rounds):
            started = time.perf_counter()
            client = _POP3From(port, OUTSIDER)
            client.stls(context)
            client.user(users[0])
            client.pass_("bench-password")
            logged_in = time.perf_counter()
            client.quit()
            relayed = _relays(platform.ports.smtp)
            done = time.perf_counter()
            print(f"lease: login {(logged_in - started) * 1000:.0f} ms (STLS included), "
                  f"then relaying from {OUTSIDER}: {relayed} after "
                  f"{(done - logged_in) * 1000:.0f} ms (new SMTP connection to RCPT)",
                  flush=True)
            with auth.channel(relay_auth, token) as ch:
                ra_rpc.RelayAuthStub(ch).RevokeLease(ra.RevokeLeaseRequest(ip=OUTSIDER))
    finally:
        platform.stop()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
