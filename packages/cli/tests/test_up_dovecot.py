"""`mailyard up` without Dovecot installed: no IMAP/POP3 processes, and one line saying how
to install it (the rest of the platform runs as before). With it, Dovecot and its bridge
are planned beside the others on the port table's ports."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailyard.cli import platform as platform_module
from mailyard.cli.mailuser import MailUser
from mailyard.cli.platform import Platform, free_ports
from mailyard.mail_access import dovecot_conf


def _me() -> MailUser:
    return MailUser("someone", 1000, 1000)


def test_without_dovecot_one_line_says_how_to_install_it(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform_module.dovecot_conf, "dovecot_binary", lambda: None)
    platform = Platform(tmp_path, ports=free_ports(), mail_user=_me())
    assert platform.dovecot is None
    assert "mail-access" not in {s.name for s in platform.specs()}
    lines = platform.table().splitlines()
    assert dovecot_conf.INSTALL_HINT in lines
    assert "apt-get install dovecot-imapd dovecot-pop3d" in dovecot_conf.INSTALL_HINT


def test_with_dovecot_the_bridge_and_dovecot_are_planned(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform_module.dovecot_conf, "dovecot_binary",
                        lambda: "/usr/sbin/dovecot")
    platform = Platform(tmp_path, ports=free_ports(), mail_user=_me(),
                        tls=(tmp_path / "c.pem", tmp_path / "k.pem"))
    specs = {s.name: s for s in platform.specs()}
    bridge = platform.env_for(specs["mail-access"])
    assert bridge["MAILYARD_MAILACCESS_RELAY_AUTH_ADDR"].endswith(
        f":{platform.ports.relayauth_grpc}")
    assert bridge["MAILYARD_MAILACCESS_MAIL_DIR"] == str(platform.mail_dir)
    dovecot = platform.dovecot_spec()
    assert dovecot.argv[:3] == ["/usr/sbin/dovecot", "-F", "-c"]
    assert dovecot.tcp_port == platform.ports.imap
    conf = Path(dovecot.argv[3]).read_text()
    assert f"port = {platform.ports.pop3s}" in conf and "mail_uid = 1000" in conf
    assert platform.notes == []
