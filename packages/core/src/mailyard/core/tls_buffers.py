"""The size of asyncio's TLS buffers, for every service's TLS connections (STARTTLS and
port 465 in smtp-ingress, STARTTLS to next hops in remote-delivery).

asyncio's SSLProtocol allocates and zero-fills a `max_size` receive buffer for every TLS
connection and decrypts up to `max_size` bytes per read. Its 256 KiB made the protocol
object cost 127 us of CPU to create here, against 38 us at 64 KiB (in smtp-ingress's
profile of a message per STARTTLS connection: 5.1 % of the samples, 1.6 % now). A TLS record
carries at most 16 KiB, so 64 KiB (what a plain session reads at a time) still takes
several records per read.

This is asyncio's loop only (EVENT_LOOP=asyncio; bench.tlsload runs on it). uvloop, the
services' default, has a TLS layer of its own that mallocs its 256 KiB without filling it.
"""

from __future__ import annotations

from asyncio import sslproto

MAX_SIZE = 64 * 1024


def lean() -> None:
    """Use MAX_SIZE for the TLS connections this process makes from now on."""
    if getattr(sslproto.SSLProtocol, "max_size", 0) > MAX_SIZE:
        sslproto.SSLProtocol.max_size = MAX_SIZE
