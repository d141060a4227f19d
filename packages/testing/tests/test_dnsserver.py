"""The loopback DnsServer's TCP side: a client that connects and then says nothing (a
resolver that timed out between connect and send, a port probe) must not hold the server's
stop() or the interpreter's exit. Its handler thread sat in recv() with no timeout, and
socketserver joins handler threads on server_close() and at exit (they were not daemons):
the test run waited on them, with no output, until the client went away."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

from mailyard.testing import DnsServer


def _accepted(before: int, timeout: float = 5.0) -> None:
    """Until the server runs a handler thread for the new connection."""
    deadline = time.monotonic() + timeout
    while threading.active_count() <= before:
        assert time.monotonic() < deadline, "the server never took the connection"
        time.sleep(0.01)


def test_a_silent_tcp_client_does_not_hold_stop() -> None:
    server = DnsServer().start()
    before = threading.active_count()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        _accepted(before)
        stopper = threading.Thread(target=server.stop, daemon=True)
        stopper.start()
        stopper.join(5)
        assert not stopper.is_alive(), "stop() waits for a client that sends nothing"


def test_a_silent_tcp_client_is_disconnected() -> None:
    server = DnsServer().start()
    server.tcp_idle = 0.2
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            assert client.recv(1) == b""  # closed by the server, not this side's timeout
    finally:
        server.stop()


def test_a_silent_tcp_client_does_not_hold_the_exit() -> None:
    """A DnsServer never stopped (a test that failed before its teardown) with a silent
    client open: the interpreter exits at once."""
    program = (
        "import socket, time\n"
        "from mailyard.testing import DnsServer\n"
        "server = DnsServer().start()\n"
        "client = socket.create_connection(('127.0.0.1', server.port))\n"
        "time.sleep(0.2)\n")  # the handler thread is in recv() by then
    try:
        subprocess.run([sys.executable, "-c", program], check=True, timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError("the interpreter waited at exit for the silent client") from None
