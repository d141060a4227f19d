"""CPU per message of DKIM signing (and, once present, of the inbound checks), measured
around the functions smtp-ingress calls, on one core: `python bench/dkim_cost.py`.

A 4 KB message with the usual headers; process time over N rounds, so other load on the
machine does not count."""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections.abc import Callable

from mailyard.core.dkimkeys import KeyDir
from mailyard.smtp_ingress.dkim_sign import Signer, sign

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


if __name__ == "__main__":
    main()
