"""Services started before NATS is ready wait for it instead of exiting.

Compose (podman 4.3 ignores `condition: service_healthy`) and Kubernetes start every
container at once: a service often comes up while nothing listens on the NATS port yet, or
while the cluster has no quorum ("JetStream system temporarily unavailable"). Exiting then
made restart loops, and podman's restart of a crashed container raced `podman-compose up`
("depends on container ... not found in input list"), which failed the whole start."""

from __future__ import annotations

import time
from pathlib import Path

from mailyard.core.natsserver import NatsServer, free_port
from mailyard.testing import ServiceProcess


def _directory(nats_url: str, logs: Path) -> ServiceProcess:
    http = free_port()
    return ServiceProcess("mailyard.directory", {
        "MAILYARD_DIRECTORY_NATS_URL": nats_url,
        "MAILYARD_DIRECTORY_NATS_REPLICAS": "3",
        "MAILYARD_DIRECTORY_GRPC_PORT": str(free_port()),
        "MAILYARD_DIRECTORY_HTTP_PORT": str(http),
    }, logs, http_port=http)


def _wait_for_line(process: ServiceProcess, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.logs():
        assert process.proc is not None
        assert process.proc.poll() is None, f"exited {process.proc.returncode}:\n{process.logs()}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{process.logs()}"
        time.sleep(0.2)


def test_a_service_waits_for_nats_and_for_a_jetstream_quorum(tmp_path: Path) -> None:
    routes = tuple(free_port() for _ in range(3))
    nodes = [NatsServer(tmp_path / f"n{i}", cluster_port=routes[i], routes=routes, name=f"n{i}")
             for i in range(3)]
    # started without waiting for ready: nothing listens on the NATS port yet
    directory = _directory(nodes[0].url, tmp_path / "logs").start(wait=None)
    try:
        _wait_for_line(directory, "waiting for NATS")
        nodes[0].start(tmp_path / "n0.log")  # one node of three: no JetStream quorum
        _wait_for_line(directory, "waiting for JetStream")
        for i in (1, 2):
            nodes[i].start(tmp_path / f"n{i}.log")
        directory.wait_ready(120)
        assert directory.logs().count('"msg": "starting"') == 1  # one process, never restarted
    finally:
        directory.kill()
        for node in nodes:
            node.stop()
