"""A DNS server on loopback for tests: one zone, UDP and TCP on one 127.0.0.1 port, so the
code under test asks a real server over real sockets and never the system resolver (MX
choice, DNSBL, PTR, SPF / DKIM / DMARC records, rspamd's lookups, a whole platform's)."""

from __future__ import annotations

import socketserver
import threading

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from mailyard.core.dkimkeys import KeyDir
from mailyard.core.natsserver import free_port

UDP_MAX = 1232  # octets of an answer over UDP (the common EDNS size); past it: TC, use TCP
POLL = 0.02  # seconds between the serving loops' looks at a stop request


class _TcpServer(socketserver.ThreadingTCPServer):
    # Handler threads are daemons and never joined: one waiting for a client that says
    # nothing must hold neither stop() (server_close joins them otherwise) nor the exit.
    daemon_threads = True
    block_on_close = False


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    block_on_close = False


class DnsServer:
    """Answers from `zone`: {"example.test": {"MX": ["10 mx1.example.test."], "A":
    ["127.0.0.1"]}}, names lower case without the final dot. A name not in the zone is
    NXDOMAIN (DnsServer() answers NXDOMAIN to everything), a type it has no records of is an
    empty answer; names in `servfail` answer SERVFAIL, names in `silent` are never answered
    (the asker times out). Every question is kept in `queries` as (name, type), in order;
    what is not a DNS query is dropped."""

    def __init__(self, zone: dict[str, dict[str, list[str]]] | None = None) -> None:
        self.zone = zone if zone is not None else {}
        self.servfail: set[str] = set()
        self.silent: set[str] = set()
        self.ttl = 60
        # seconds a resolver may keep "no such name" / "no such record" (RFC 2308: the SOA
        # in the authority section, as a real zone's server sends it); 0 keeps nothing
        self.negative_ttl = 0
        self.queries: list[tuple[str, str]] = []
        self.port = 0
        # seconds a TCP client may stay silent before the server closes its connection
        # (RFC 7766 section 6.2.3: servers time idle connections out)
        self.tcp_idle = 5.0
        self._servers: list[socketserver.BaseServer] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, name: str, rtype: str, *values: str) -> None:
        """`add("_dmarc.example.test", "TXT", '"v=DMARC1; p=reject"')`: values in zone-file
        text, replacing what the name had of that type."""
        self.zone.setdefault(name.lower().rstrip("."), {})[rtype] = list(values)

    def add_txt(self, name: str, text: str) -> None:
        """One TXT record of any length (a DKIM key's): character-strings of 255 at most."""
        self.add(name, "TXT", " ".join(f'"{text[i:i + 255]}"' for i in range(0, len(text), 255)))

    def publish_dkim(self, keys: KeyDir) -> None:
        """The TXT record of every key in a DKIM key folder, as `mailyard dkim record` prints."""
        for key in keys.keys()[0]:
            self.add_txt(key.record_name, key.public_record)

    def txt(self, name: bytes, timeout: float = 5) -> bytes | None:
        """TXT lookup over UDP to this server, strings joined: dkimpy's `dnsfunc`."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        try:
            answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return None
        return b"".join(answer[0].strings)

    def answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
            question = query.question[0]
        except (dns.exception.DNSException, IndexError):
            return None
        name = question.name.to_text().rstrip(".").lower()
        rtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rtype))
        if name in self.silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.zone:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif self.zone[name].get(rtype):
            response.answer.append(dns.rrset.from_text_list(
                question.name, self.ttl, dns.rdataclass.IN, question.rdtype,
                self.zone[name][rtype]))
        if not response.answer and name not in self.servfail:
            apex = dns.name.from_text(name.rsplit(".", 1)[-1] or ".")
            response.authority.append(dns.rrset.from_text(
                apex, self.negative_ttl, dns.rdataclass.IN, dns.rdatatype.SOA,
                f"ns.{apex} hostmaster.{apex} 1 3600 600 86400 {self.negative_ttl}"))
        return response.to_wire(max_size=65535)  # whole: UDP truncates it (_truncated)

    def start(self) -> DnsServer:
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                out = server.answer(data)
                if out is not None:
                    sock.sendto(out if len(out) <= UDP_MAX else _truncated(out),
                                self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(server.tcp_idle)
                try:
                    length = int.from_bytes(self.request.recv(2), "big")
                    data = b""
                    while len(data) < length:
                        chunk = self.request.recv(length - len(data))
                        if not chunk:
                            return
                        data += chunk
                    out = server.answer(data)
                    if out is not None:
                        self.request.sendall(len(out).to_bytes(2, "big") + out)
                except OSError:  # silent past tcp_idle, or gone
                    return

        for _ in range(20):  # a port free for both TCP and UDP
            port = free_port()
            try:
                tcp = _TcpServer(("127.0.0.1", port), Tcp)
            except OSError:
                continue
            try:
                udp = _UdpServer(("127.0.0.1", port), Udp)
            except OSError:
                tcp.server_close()
                continue
            break
        else:
            raise OSError("no port free for both TCP and UDP on 127.0.0.1")
        self.port = port
        self._servers = [tcp, udp]
        for each in self._servers:
            # stop()'s shutdown() waits for the loop to look at its flag: every 0.5 s by
            # default, twice in turn (TCP, UDP), about a second of every test that used it
            threading.Thread(target=each.serve_forever, kwargs={"poll_interval": POLL},
                             daemon=True).start()
        return self

    def stop(self) -> None:
        for each in self._servers:
            each.shutdown()
            each.server_close()
        self._servers = []


def _truncated(wire: bytes) -> bytes:
    """An answer too large for UDP as a real server sends it: no records, the TC flag set,
    so the asker asks again over TCP (where a record of up to 64 KB comes whole)."""
    response = dns.message.from_wire(wire)
    for section in (response.answer, response.authority, response.additional):
        section.clear()
    response.flags |= dns.flags.TC
    return response.to_wire()
