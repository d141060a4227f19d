"""POP-before-SMTP through Dovecot: from 127.0.0.2 (no relaying by tcp.smtp) relaying is
refused with 553; a failed login changes nothing; a POP3 (or IMAP) login opens relaying for
that address; the lease is listed with the user and the protocol; after the lease's time
relaying is refused again."""

from __future__ import annotations

import imaplib
import poplib
import time

import pytest

from .conftest import OUTSIDER, Box


def _wait_refused(box: Box, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if box.relay_reply() == 553:
            return
        time.sleep(0.2)
    raise AssertionError("relaying still allowed after the lease's time")


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_login_opens_relaying_until_the_lease_expires(box: Box, protocol: str) -> None:
    user = f"lease-{protocol}@example.test"
    box.add_user(user, "correct horse")
    _wait_refused(box)  # also: nothing left from another test's lease
    assert box.relay_reply() == 553

    ok_before = box.metric(box.ports.mailaccess_http, "mailyard_mailbox_logins_total",
                           protocol=protocol, result="ok")
    bad_before = box.metric(box.ports.mailaccess_http, "mailyard_mailbox_logins_total",
                            protocol=protocol, result="bad_credentials")
    granted_before = box.metric(box.ports.relayauth_http,
                                "mailyard_relay_leases_granted_total", source=protocol)

    failed = poplib.error_proto if protocol == "pop3" else imaplib.IMAP4.error
    with pytest.raises(failed):
        (box.pop3 if protocol == "pop3" else box.imap)(user, "wrong horse")
    assert box.relay_reply() == 553
    assert OUTSIDER not in box.cli("lease", "list")

    if protocol == "pop3":
        client = box.pop3(user, "correct horse")
        client.quit()
    else:
        session = box.imap(user, "correct horse")
        session.logout()
    assert box.relay_reply() == 250
    listed = [line for line in box.cli("lease", "list").splitlines()
              if line.startswith(OUTSIDER + "\t")]
    assert len(listed) == 1 and f"user={user}" in listed[0]
    assert listed[0].endswith(f"source={protocol}")

    assert box.metric(box.ports.mailaccess_http, "mailyard_mailbox_logins_total",
                      protocol=protocol, result="ok") == ok_before + 1
    assert box.metric(box.ports.mailaccess_http, "mailyard_mailbox_logins_total",
                      protocol=protocol, result="bad_credentials") == bad_before + 1
    assert box.metric(box.ports.relayauth_http, "mailyard_relay_leases_granted_total",
                      source=protocol) == granted_before + 1

    _wait_refused(box)
    assert OUTSIDER not in box.cli("lease", "list")
