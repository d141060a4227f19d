"""spawn_supervised while gRPC is busy in the same process, as in `mailyard up` and the tests
that start a platform: a Python fork with a preexec_fn runs gRPC's fork handlers, and since
grpcio 1.80 they sometimes abort the child before its exec (grpc/grpc#43055). Reproduced
here at 10 children in 300 before spawn_supervised stopped using a preexec_fn."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import HealthServicer

from mailyard.cli.platform import spawn_supervised


def test_children_start_while_grpc_calls_are_in_flight() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    done = threading.Event()

    def calls() -> None:
        while not done.is_set():
            try:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                pass

    caller = threading.Thread(target=calls, daemon=True)
    caller.start()
    try:
        codes = [spawn_supervised(["true"]).wait() for _ in range(200)]
    finally:
        done.set()
        caller.join(5)
        channel.close()
        server.stop(None)
    assert codes == [0] * 200, f"{sum(c != 0 for c in codes)} children died: {set(codes)}"
