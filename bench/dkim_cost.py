"""CPU per message of DKIM signing and of the inbound sender checks, measured around the
functions smtp-ingress calls, on one core: `python bench/dkim_cost.py`.

A 4 KB message with the usual headers; process time over N rounds, so other load on the
machine does not count. The checks' parsing and crypto are measured without DNS; one
dnspython lookup (what each SPF, DKIM key, DMARC and MX query costs us on top) is measured
against a loopback DNS responder in a child process, so its CPU is not counted here."""

from __future__ import annotations

import argparse
import asyncio
import functools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import dkim
import dns.asyncresolver
import dns.resolver
import spf

from mailyard.core.dkim_sign import Signer, from_domain, sign
from mailyard.core.dkimkeys import KeyDir
from mailyard.smtp_ingress import authresults, dmarc_eval
from mailyard.smtp_ingress.dkim_verify import DkimResult
from mailyard.smtp_ingress.spf_check import SpfResult

RESPONDER = """
import threading
from mailyard.testing import DnsServer
server = DnsServer({"example.com": {"TXT": ['"v=spf1 ip4:192.0.2.0/24 -all"']}}).start()
print(server.port, flush=True)
threading.Event().wait()
"""

MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\n"
           b"Subject: quarterly figures\r\nDate: Thu, 03 Dec 2026 18:00:00 +0000\r\n"
           b"Message-ID: <20261203180000.1@example.com>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + b"a line of body text\r\n" * 200)


def per_message(func: Callable[[], object], rounds: int) -> float:
    func()
    start = time.process_time()
    for _ in range(rounds):
        func()
    return (time.process_time() - start) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        keys = KeyDir(folder)
        keys.create("example.com", "rsa", "rsa")
        keys.create("example.com", "ed", "ed25519")
        signer = Signer(folder)
        both = signer.keys_for_message(MESSAGE)
        for label, chosen in (("ed25519", [k for k in both if k.key_type == "ed25519"]),
                              ("rsa-2048", [k for k in both if k.key_type == "rsa"]),
                              ("both", both)):
            cost = per_message(functools.partial(sign, MESSAGE, chosen), args.rounds)
            print(f"sign {label:9s} {cost:9.0f} us/msg")
        cost = per_message(lambda: signer.keys_for_message(MESSAGE), args.rounds)
        print(f"key lookup      {cost:9.0f} us/msg (From: parse)")
        records = {k.record_name.encode() + b".": k.public_record.encode() for k in both}

        def key_record(name: bytes, timeout: float = 5) -> bytes | None:
            return records.get(name)
        for key in both:
            signed = sign(MESSAGE, [key]) + MESSAGE
            cost = per_message(functools.partial(dkim.verify, signed, dnsfunc=key_record),
                               args.rounds)
            print(f"verify {key.key_type:9s}{cost:9.0f} us/msg (dkimpy, key given)")
    spf_result = SpfResult("pass", "example.com", "mailfrom")
    dkims = [DkimResult("pass", "example.com", "rsa")]
    policy = "v=DMARC1; p=reject; rua=mailto:d@example.com"

    def dmarc_step() -> None:
        parsed = dmarc_eval._EVALUATOR.parse_record(policy, domain=from_domain(MESSAGE))
        dmarc_eval._EVALUATOR.get_result(parsed, auth_results=dmarc_eval.dmarc.AuthResults(
            spf=dmarc_eval.dmarc.SPF("example.com", dmarc_eval.dmarc.SPFResult.PASS),
            dkim=[dmarc_eval.dmarc.DKIM("example.com", dmarc_eval.dmarc.DKIMResult.PASS)]))
    print(f"dmarc           {per_message(dmarc_step, args.rounds):9.0f} us/msg (parse + align)")
    cost = per_message(lambda: spf.query(i="192.0.2.1", s="a@example.com", h="mx.example.com")
                       .check(spf="v=spf1 ip4:192.0.2.0/24 -all"), args.rounds)
    print(f"spf             {cost:9.0f} us/msg (pyspf, record given)")
    dmarc = dmarc_eval.DmarcResult("pass", "example.com")

    def header_step() -> None:
        authresults.strip_ours(MESSAGE, "mx.example.net")
        authresults.header("mx.example.net", spf_result, spf_result, dkims, dmarc)
    print(f"a-r header      {per_message(header_step, args.rounds):9.0f} us/msg (strip + build)")
    print(f"dns lookup      {dns_lookup_cost(args.rounds, False):9.0f} us/lookup (dnspython async)")
    print(f"dns cached      {dns_lookup_cost(args.rounds, True):9.0f} us/lookup (answer in cache)")


def dns_lookup_cost(rounds: int, cached: bool) -> float:
    child = subprocess.Popen([sys.executable, "-c", RESPONDER], stdout=subprocess.PIPE)
    assert child.stdout is not None
    port = int(child.stdout.readline())
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    if cached:
        resolver.cache = dns.resolver.LRUCache(1000)

    async def lookups() -> float:
        await resolver.resolve("example.com", "TXT")
        start = time.process_time()
        for _ in range(rounds):
            await resolver.resolve("example.com", "TXT")
        return (time.process_time() - start) / rounds * 1e6
    try:
        return asyncio.run(lookups())
    finally:
        child.kill()
        child.wait()


if __name__ == "__main__":
    main()
