"""Mailyard's test support (never installed into an image): the pytest plugin loaded by the
root pytest config (`-p mailyard.testing.plugin`) and the real parts tests and benchmarks
run against."""

from mailyard.core.natsserver import NatsServer, free_port, wait_port
from mailyard.testing.dnsserver import DnsServer
from mailyard.testing.processes import ServiceProcess, grpc_service
from mailyard.testing.smtpsink import Received, SmtpSink

__all__ = ["DnsServer", "NatsServer", "Received", "ServiceProcess", "SmtpSink", "free_port",
           "grpc_service", "wait_port"]
