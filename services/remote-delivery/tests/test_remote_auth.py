"""AUTH to a smarthost (smtproutes `auth=USER:/password/file`): against aiosmtpd servers on
127.0.0.1 that require AUTH, with STARTTLS from a trustme CA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from remote_rig import Rig, Smtp, results, server_tls

from mailyard.api.mail.v1.delivery_pb2 import OUTCOME_DEFERRED, OUTCOME_DELIVERED
from mailyard.core import bus
from mailyard.remote_delivery import metrics
from mailyard.remote_delivery.worker import Worker
from mailyard.testing import DnsServer

MSG = b"Subject: via the smarthost\r\n\r\nhello\r\n"
PASSWORD = "c0rrect horse"  # noqa: S105 - a test server's password
# aiosmtpd warns when a server takes AUTH without TLS; two tests want exactly that.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def password_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "smarthost.pw"
    path.write_text(text + "\n")
    return path


def trust(rig: Rig, ca: Any, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    rig.deliverer._verifying.load_verify_locations(cafile=str(ca_file))


async def test_auth_over_verified_starttls_through_the_worker(
        rig: Rig, worker: Worker, dns_server: DnsServer, smtp_servers: list[Any], ca: Any,
        tmp_path: Path) -> None:
    server = Smtp(tls_context=server_tls(ca, "smarthost.test"),
                  users={"mailer": PASSWORD}).start()
    smtp_servers.append(server)
    trust(rig, ca, tmp_path)
    dns_server.zone["smarthost.test"] = {"A": ["127.0.0.1"]}
    pw = password_file(tmp_path, PASSWORD)
    await rig.routes(f":smarthost.test:{server.port} tls=verify auth=mailer:{pw}\n")
    job = await rig.message(MSG, ["a@far.test", "b@far.test"])
    await bus.publish(rig.js, bus.JOB_SUBJECT["remote"], job, msg_id=job.job_id)
    [res] = await results(rig.js, 1)
    assert [r.outcome for r in res.results] == [OUTCOME_DELIVERED, OUTCOME_DELIVERED], res
    assert res.results[0].remote_host == "smarthost.test"
    [got] = server.messages
    assert got.auth_user == "mailer" and got.tls
    assert got.rcpt_tos == ["a@far.test", "b@far.test"] and got.data == MSG
    assert [(user, ok) for _, user, ok in server.auth_attempts] == [("mailer", True)]
    assert server.auth_attempts[0][0] in ("PLAIN", "LOGIN")


async def test_wrong_password_defers_and_a_fixed_file_applies_next_time(
        rig: Rig, smtp_servers: list[Any], ca: Any, tmp_path: Path) -> None:
    server = Smtp(tls_context=server_tls(ca, "127.0.0.1"), users={"mailer": PASSWORD}).start()
    smtp_servers.append(server)
    pw = password_file(tmp_path, "wrong password")
    await rig.routes(f"far.test:127.0.0.1:{server.port} tls=must auth=mailer:{pw}\n")
    deferred = metrics.DEFERRALS.labels("auth")._value.get()
    job = await rig.message(MSG, ["a@far.test"])
    [out] = await rig.deliverer.deliver(job, MSG)
    # 535 from the smarthost is our configuration problem, not the recipient's: the mail
    # waits in the queue (qmail's auth patches say the same: a temporary failure)
    assert out.outcome == OUTCOME_DEFERRED
    assert "authentication failed" in out.reply and "535" in out.reply, out.reply
    assert server.messages == []
    assert server.auth_attempts and all(user == "mailer" and not ok
                                        for _, user, ok in server.auth_attempts)
    assert metrics.DEFERRALS.labels("auth")._value.get() == deferred + 1
    # the password is read at delivery time: fixing the file fixes the next attempt
    password_file(tmp_path, PASSWORD)
    [out] = await rig.deliverer.deliver(job, MSG)
    assert out.outcome == OUTCOME_DELIVERED, out.reply
    assert [m.auth_user for m in server.messages] == ["mailer"]


async def test_auth_is_not_sent_when_the_route_needs_tls_and_gets_none(
        rig: Rig, smtp_servers: list[Any], tmp_path: Path) -> None:
    """tls=must and no STARTTLS offered: deferred before AUTH, the password never leaves."""
    server = Smtp(users={"mailer": PASSWORD}).start()
    smtp_servers.append(server)
    pw = password_file(tmp_path, PASSWORD)
    await rig.routes(f"far.test:127.0.0.1:{server.port} tls=must auth=mailer:{pw}\n")
    job = await rig.message(MSG, ["a@far.test"])
    [out] = await rig.deliverer.deliver(job, MSG)
    assert out.outcome == OUTCOME_DEFERRED and "STARTTLS is not offered" in out.reply
    assert server.auth_attempts == [] and server.messages == []


async def test_auth_in_clear_only_to_loopback(rig: Rig, smtp_servers: list[Any],
                                              tmp_path: Path) -> None:
    """tls=none to a loopback smarthost (a local relay): AUTH without TLS is allowed."""
    server = Smtp(users={"mailer": PASSWORD}).start()
    smtp_servers.append(server)
    pw = password_file(tmp_path, PASSWORD)
    await rig.routes(f"far.test:127.0.0.1:{server.port} tls=none auth=mailer:{pw}\n")
    job = await rig.message(MSG, ["a@far.test"])
    [out] = await rig.deliverer.deliver(job, MSG)
    assert out.outcome == OUTCOME_DELIVERED, out.reply
    assert [(m.auth_user, m.tls) for m in server.messages] == [("mailer", False)]
