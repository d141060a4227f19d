"""Delivery against a loopback DNS server and loopback SMTP servers."""

from __future__ import annotations

import pytest
from remote_rig import Greeter, Rig, Smtp, closed_port, server_tls

from mailyard.api.mail.v1.delivery_pb2 import (
    OUTCOME_DEFERRED,
    OUTCOME_DELIVERED,
    OUTCOME_FAILED,
)
from mailyard.remote_delivery.deliver import NO_CONNECTION

MSG = b"Subject: hi\r\n\r\nhello\r\n"


def mx_zone(rig: Rig, dns, domain: str, mx: list[tuple[int, str]]) -> None:  # type: ignore[no-untyped-def]
    dns.zone[domain] = {"MX": [f"{p} {h}." for p, h in mx]}
    for _, host in mx:
        dns.zone.setdefault(host, {"A": ["127.0.0.1"]})


async def test_mx_order_and_fallback(rig: Rig, dns_server, smtp_servers) -> None:  # type: ignore[no-untyped-def]
    """Best MX refuses connections, the second too, the third (worst) takes the mail."""
    good = Smtp().start()
    smtp_servers.append(good)
    rig.settings.smtp_port = good.port  # SMTP_PORT: each MX on its own loopback address
    dns_server.zone.update({
        "example.test": {"MX": ["30 mx3.example.test.", "10 mx1.example.test.",
                                "20 mx2.example.test."]},
        "mx1.example.test": {"A": ["127.0.0.2"]},
        "mx2.example.test": {"A": ["127.0.0.3"]},
        "mx3.example.test": {"A": ["127.0.0.1"]},
    })
    plan = await rig.deliverer.plan("example.test")
    assert [h.host for h in plan.hops] == ["mx1.example.test", "mx2.example.test",
                                           "mx3.example.test"]
    assert plan.source == "mx"
    job = await rig.message(MSG, ["u1@example.test", "u2@example.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert [r.outcome for r in out] == [OUTCOME_DELIVERED, OUTCOME_DELIVERED]
    assert out[0].remote_host == "mx3.example.test"
    assert out[0].reply.startswith("250")
    assert len(good.messages) == 1 and good.messages[0].rcpt_tos == ["u1@example.test",
                                                                      "u2@example.test"]


async def test_4xx_greeting_then_next_mx(rig: Rig, dns_server, smtp_servers) -> None:  # type: ignore[no-untyped-def]
    good = Smtp().start()
    smtp_servers.append(good)
    busy = Greeter(b"421 4.3.2 too busy\r\n")
    smtp_servers.append(busy)
    await rig.routes(f"greet.test:127.0.0.1:{busy.port}\n")
    job = await rig.message(MSG, ["u@greet.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert out[0].outcome == OUTCOME_DEFERRED
    assert "greeting failed" in out[0].reply and "421" in out[0].reply
    # the same domain through MX: 421 host first, good host second
    await rig.routes("")
    dns_server.zone.update({"greet.test": {"MX": ["10 busy.greet.test.", "20 ok.greet.test."]},
                            "busy.greet.test": {"A": ["127.0.0.5"]},
                            "ok.greet.test": {"A": ["127.0.0.1"]}})
    rig.settings.smtp_port = good.port
    # make 127.0.0.5:good.port greet 421: a second greeter there
    busy2 = Greeter.__new__(Greeter)
    import socketserver
    import threading

    class H(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(b"421 4.3.2 busy\r\n")

    busy2.server = socketserver.ThreadingTCPServer(("127.0.0.5", good.port), H)
    threading.Thread(target=busy2.server.serve_forever, daemon=True).start()
    smtp_servers.append(busy2)
    out = await rig.deliverer.deliver(job, MSG)
    assert out[0].outcome == OUTCOME_DELIVERED and out[0].remote_host == "ok.greet.test"


async def test_nobody_answers_is_qmail_deferral(rig: Rig, dns_server) -> None:  # type: ignore[no-untyped-def]
    rig.settings.smtp_port = closed_port()
    dns_server.zone.update({"down.test": {"MX": ["10 a.down.test.", "20 b.down.test."]},
                            "a.down.test": {"A": ["127.0.0.1"]},
                            "b.down.test": {"A": ["127.0.0.2"]}})
    job = await rig.message(MSG, ["u@down.test", "v@down.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert {r.outcome for r in out} == {OUTCOME_DEFERRED}
    assert out[0].reply == NO_CONNECTION and out[0].enhanced_code == "4.4.1"


async def test_implicit_mx(rig: Rig, dns_server, smtp_servers) -> None:  # type: ignore[no-untyped-def]
    good = Smtp().start()
    smtp_servers.append(good)
    rig.settings.smtp_port = good.port
    dns_server.zone["plain.test"] = {"A": ["127.0.0.1"]}
    plan = await rig.deliverer.plan("plain.test")
    assert plan.source == "implicit-mx" and plan.hops[0].host == "plain.test"
    job = await rig.message(MSG, ["u@plain.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert out[0].outcome == OUTCOME_DELIVERED


async def test_null_mx_nxdomain_and_servfail(rig: Rig, dns_server) -> None:  # type: ignore[no-untyped-def]
    dns_server.zone["null.test"] = {"MX": ["0 ."], "A": ["127.0.0.1"]}
    dns_server.servfail.add("broken.test")
    job = await rig.message(MSG, ["u@null.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert out[0].outcome == OUTCOME_FAILED and "null MX" in out[0].reply
    assert out[0].enhanced_code == "5.1.10"
    assert (await rig.deliverer.plan("null.test")).source == "null-mx"
    job = await rig.message(MSG + b"x", ["u@nowhere.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert out[0].outcome == OUTCOME_FAILED and out[0].enhanced_code == "5.1.2"
    job = await rig.message(MSG + b"y", ["u@broken.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert out[0].outcome == OUTCOME_DEFERRED and out[0].enhanced_code == "4.1.2"


async def test_mx_pointing_at_us_loops(rig: Rig, dns_server) -> None:  # type: ignore[no-untyped-def]
    dns_server.zone.update({"loop.test": {"MX": ["10 mx.ours.test."]},
                            "mx.ours.test": {"A": ["127.0.0.9"]},
                            "backup.test": {"MX": ["10 mx.ours.test.", "5 better.test."]},
                            "better.test": {"A": ["127.0.0.1"]}})
    job = await rig.message(MSG, ["u@loop.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert out[0].outcome == OUTCOME_FAILED and "loops back to myself" in out[0].reply
    plan = await rig.deliverer.plan("backup.test")  # we are a backup MX: only better ones
    assert [h.host for h in plan.hops] == ["better.test"]


async def test_smtproutes_override_mx(rig: Rig, dns_server, smtp_servers) -> None:  # type: ignore[no-untyped-def]
    via_route = Smtp().start()
    smtp_servers.append(via_route)
    rig.settings.smtp_port = closed_port()
    dns_server.zone.update({"routed.test": {"MX": ["10 mx.routed.test."]},
                            "mx.routed.test": {"A": ["127.0.0.1"]},
                            "relay.test": {"A": ["127.0.0.1"]}})
    await rig.routes(f".routed.test:nothing.invalid\nrouted.test:relay.test:{via_route.port}\n")
    plan = await rig.deliverer.plan("routed.test")
    assert plan.source == "smtproutes" and plan.hops[0].port == via_route.port
    job = await rig.message(MSG, ["u@routed.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert out[0].outcome == OUTCOME_DELIVERED and out[0].remote_host == "relay.test"
    # read live: the next delivery obeys a changed file
    await rig.routes("routed.test:\n")
    assert (await rig.deliverer.plan("routed.test")).source == "mx"


@pytest.mark.parametrize("pipelining", [False, True])
async def test_one_550_does_not_fail_the_rest(rig: Rig, smtp_servers,  # type: ignore[no-untyped-def]
                                              pipelining: bool) -> None:
    server = Smtp(refuse={"gone@r.test": "550 5.1.1 no such user",
                          "full@r.test": "452 4.2.2 mailbox full"},
                  pipelining=pipelining).start()
    smtp_servers.append(server)
    await rig.routes(f"r.test:127.0.0.1:{server.port}")
    job = await rig.message(MSG, ["a@r.test", "gone@r.test", "full@r.test", "b@r.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert [r.outcome for r in out] == [OUTCOME_DELIVERED, OUTCOME_FAILED, OUTCOME_DEFERRED,
                                        OUTCOME_DELIVERED]
    assert out[1].reply == "550 5.1.1 no such user" and out[1].enhanced_code == "5.1.1"
    assert out[2].enhanced_code == "4.2.2"
    assert server.messages[0].rcpt_tos == ["a@r.test", "b@r.test"]


@pytest.mark.parametrize("pipelining", [False, True])
async def test_dots_and_line_endings_are_normalised(rig: Rig, smtp_servers,  # type: ignore[no-untyped-def]
                                                    pipelining: bool) -> None:
    server = Smtp(pipelining=pipelining).start()
    smtp_servers.append(server)
    await rig.routes(f"dots.test:127.0.0.1:{server.port}")
    stored = (b"Subject: smuggle\r\n\r\n.leading dot\r\nsmuggled\r.\r\nMAIL FROM:<x@y>\r\n"
              b"bare\n.\r\nlf\nend")
    job = await rig.message(stored, ["u@dots.test"])
    out = await rig.deliverer.deliver(job, stored)
    assert out[0].outcome == OUTCOME_DELIVERED
    got = server.messages[0].data
    # aiosmtpd un-stuffs the dots; every line ending arrived as CRLF and nothing ended early
    assert got == (b"Subject: smuggle\r\n\r\n.leading dot\r\nsmuggled\r\n.\r\nMAIL FROM:<x@y>"
                   b"\r\nbare\r\n.\r\nlf\r\nend\r\n")
    assert b"\r\r" not in got and got.count(b"\n") == got.count(b"\r\n")
    assert len(server.messages) == 1


async def test_size_and_8bitmime(rig: Rig, smtp_servers) -> None:  # type: ignore[no-untyped-def]
    server = Smtp().start()
    smtp_servers.append(server)
    await rig.routes(f"8bit.test:127.0.0.1:{server.port}")
    body = "Subject: grüße\r\n\r\nHällo\r\n".encode()
    job = await rig.message(body, ["u@8bit.test"], body_8bit=True)
    out = await rig.deliverer.deliver(job, body)
    assert out[0].outcome == OUTCOME_DELIVERED
    options = server.messages[0].mail_options
    assert f"SIZE={len(body)}" in options and "BODY=8BITMIME" in options
    assert server.messages[0].data == body


@pytest.mark.parametrize("pipelining", [False, True])
async def test_connection_reuse(rig: Rig, smtp_servers, pipelining: bool) -> None:  # type: ignore[no-untyped-def]
    from mailyard.remote_delivery import metrics

    server = Smtp(pipelining=pipelining).start()
    smtp_servers.append(server)
    await rig.routes(f"reuse.test:127.0.0.1:{server.port}")
    reused = metrics.CONNECTIONS.labels("reused")._value.get()
    for i in range(3):
        job = await rig.message(MSG + str(i).encode(), ["u@reuse.test"])
        out = await rig.deliverer.deliver(job, MSG)
        assert out[0].outcome == OUTCOME_DELIVERED
    assert metrics.CONNECTIONS.labels("reused")._value.get() - reused == 2
    assert len(server.messages) == 3


@pytest.mark.parametrize("pipelining", [False, True])
@pytest.mark.parametrize("policy", ["may", "must", "verify"])
async def test_starttls_with_trustme(rig: Rig, dns_server, smtp_servers, ca, tmp_path,  # type: ignore[no-untyped-def]
                                     policy: str, pipelining: bool) -> None:
    server = Smtp(tls_context=server_tls(ca, "mx.tls.test"), pipelining=pipelining).start()
    smtp_servers.append(server)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    rig.deliverer._verifying.load_verify_locations(cafile=str(ca_file))
    dns_server.zone.update({"tls.test": {"MX": ["10 mx.tls.test."]},
                            "mx.tls.test": {"A": ["127.0.0.1"]}})
    rig.settings.smtp_port = server.port
    await rig.routes(f"tls.test: tls={policy}")
    for i in range(2):  # the second transaction on the reused TLS session
        job = await rig.message(MSG + str(i).encode(), ["u@tls.test"])
        out = await rig.deliverer.deliver(job, MSG)
        assert out[0].outcome == OUTCOME_DELIVERED, out[0].reply
    assert [m.tls for m in server.messages] == [True, True]


async def test_tls_must_and_verify_refuse_what_they_cannot_get(rig: Rig, dns_server,  # type: ignore[no-untyped-def]
                                                               smtp_servers, ca) -> None:
    plain = Smtp().start()
    wrong_name = Smtp(tls_context=server_tls(ca, "other.test")).start()
    smtp_servers += [plain, wrong_name]
    dns_server.zone["relay.test"] = {"A": ["127.0.0.1"]}
    await rig.routes(f"plain.test:relay.test:{plain.port} tls=must\n"
                     f"wrong.test:relay.test:{wrong_name.port} tls=verify\n"
                     f"maybe.test:relay.test:{plain.port} tls=may\n")
    job = await rig.message(MSG, ["u@plain.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert out[0].outcome == OUTCOME_DEFERRED and "STARTTLS is not offered" in out[0].reply
    job = await rig.message(MSG, ["u@wrong.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert out[0].outcome == OUTCOME_DEFERRED and "STARTTLS failed" in out[0].reply
    assert plain.messages == [] and wrong_name.messages == []
    job = await rig.message(MSG, ["u@maybe.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert out[0].outcome == OUTCOME_DELIVERED and not plain.messages[0].tls


async def test_a_plan_is_reused_until_its_ttl_or_a_route_change(  # type: ignore[no-untyped-def]
        rig: Rig, dns_server, smtp_servers) -> None:
    """A steady stream to one domain resolves its MX once per TTL, not once per message;
    equal preferences are still shuffled on every use; smtproutes changes apply at once."""
    good = Smtp().start()
    smtp_servers.append(good)
    rig.settings.smtp_port = good.port
    dns_server.zone.update({"steady.test": {"MX": ["10 a.steady.test.", "10 b.steady.test."]},
                            "a.steady.test": {"A": ["127.0.0.1"]},
                            "b.steady.test": {"A": ["127.0.0.1"]}})
    first = set()
    for i in range(40):
        job = await rig.message(MSG + str(i).encode(), ["u@steady.test"])
        [out] = await rig.deliverer.deliver(job, MSG)
        assert out.outcome == OUTCOME_DELIVERED
        first.add(out.remote_host)
    assert first == {"a.steady.test", "b.steady.test"}  # both equal MX get mail
    assert dns_server.queries.count(("steady.test", "MX")) == 1
    # a route for the domain applies to the very next delivery
    via = Smtp().start()
    smtp_servers.append(via)
    await rig.routes(f"steady.test:127.0.0.1:{via.port}")
    job = await rig.message(MSG + b"routed", ["u@steady.test"])
    [out] = await rig.deliverer.deliver(job, MSG)
    assert out.outcome == OUTCOME_DELIVERED and len(via.messages) == 1
    # answers with TTL 0 are never reused
    await rig.routes("")
    dns_server.ttl = 0
    dns_server.zone["zero.test"] = {"MX": ["10 a.steady.test."]}
    for i in range(3):
        job = await rig.message(MSG + b"zero" + str(i).encode(), ["u@zero.test"])
        [out] = await rig.deliverer.deliver(job, MSG)
        assert out.outcome == OUTCOME_DELIVERED
    assert dns_server.queries.count(("zero.test", "MX")) == 3
