"""The rendered config is one Dovecot accepts (doveconf parses it), refuses root as the
mail user and values that would smuggle settings, and the container renderer answers bad
input with one line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mailyard.mail_access import dovecot_conf

from .conftest import need_dovecot


def _config(tmp_path: Path, **changes: object) -> dovecot_conf.DovecotConfig:
    values: dict[str, object] = dict(
        out_dir=tmp_path / "conf", base_dir=tmp_path / "run", state_dir=tmp_path / "state",
        log_path=tmp_path / "dovecot.log", auth_socket=tmp_path / "auth.sock",
        ssl_cert=tmp_path / "cert.pem", ssl_key=tmp_path / "key.pem", mail_uid=8, mail_gid=8,
        imap_port=1143, imaps_port=1993, pop3_port=1110, pop3s_port=1995, stats_port=9900)
    values.update(changes)
    return dovecot_conf.DovecotConfig(**values)  # type: ignore[arg-type]


def test_doveconf_accepts_the_rendered_config(tmp_path: Path) -> None:
    need_dovecot()
    doveconf = shutil.which("doveconf") or "/usr/bin/doveconf"
    conf = dovecot_conf.render(_config(tmp_path))
    (tmp_path / "cert.pem").write_text("")  # doveconf -n does not read them
    (tmp_path / "key.pem").write_text("")
    out = subprocess.run([doveconf, "-n", "-c", str(conf)], capture_output=True, text=True,
                         check=False, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "first_valid_uid = 8" in out.stdout and "last_valid_uid = 8" in out.stdout
    assert "disable_plaintext_auth" not in out.stdout  # yes is Dovecot's default
    assert "driver = dict" in out.stdout
    dict_conf = (tmp_path / "conf" / "auth-dict.conf.ext").read_text()
    assert f"proxy:{tmp_path / 'auth.sock'}:mailyard" in dict_conf
    allowed = dovecot_conf.render(_config(tmp_path, allow_plaintext=True))
    assert "disable_plaintext_auth = no" in allowed.read_text()


@pytest.mark.parametrize(("changes", "message"), [
    ({"mail_uid": 0}, "must not be root"),
    ({"listen": "127.0.0.1\nmail_uid = 0"}, "one line"),
])
def test_unsafe_values_are_refused(tmp_path: Path, changes: dict[str, object],
                                   message: str) -> None:
    with pytest.raises(dovecot_conf.ConfigError, match=message):
        dovecot_conf.render(_config(tmp_path, **changes))
    assert not (tmp_path / "conf" / "dovecot.conf").exists()


def test_container_renderer_says_what_is_wrong_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--out", str(tmp_path / "out"), "--auth-socket", "/run/a.sock", "--cert", "c",
            "--key", "k", "--mail-gid", "10001"]
    assert dovecot_conf.main([*base, "--mail-uid", "10001", "--ports", "1,2"]) == 2
    assert capsys.readouterr().err.strip() == "mailyard-dovecot-conf: --ports needs five numbers"
    assert dovecot_conf.main([*base, "--mail-uid", "0"]) == 2
    assert "must not be root" in capsys.readouterr().err
    assert dovecot_conf.main([*base, "--mail-uid", "10001"]) == 0
    assert (tmp_path / "out" / "dovecot.conf").is_file()
