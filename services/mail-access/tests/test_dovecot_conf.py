"""The rendered config is one Dovecot accepts (doveconf parses it), refuses root as the
mail user and values that would smuggle settings, and the container renderer answers bad
input with one line."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import trustme

from mailyard.cli.platform import free_ports
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
    assert "auth_cache_size" not in out.stdout  # Dovecot's default 0: see the template
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


def test_dovecot_started_by_a_non_root_user_serves(tmp_path: Path) -> None:
    """As `mailyard up` run by a normal user and the containers (uid 10001) start it. Found
    broken: a non-root master could neither give its sockets to the group dovecot nor
    chroot its login processes, and exited 89 ("Failed to start listeners")."""
    need_dovecot()
    if os.geteuid() != 0:
        pytest.skip("starts Dovecot as another user (nobody): needs root")
    user = pwd.getpwnam("nobody")
    # Not under pytest's 0700 temp root: nobody must reach its files.
    data = Path(tempfile.mkdtemp(prefix="mailyard-dovecot-nonroot-"))
    try:
        ca = trustme.CA()
        pair = ca.issue_cert("127.0.0.1")
        pair.cert_chain_pems[0].write_to_path(str(data / "cert.pem"))
        pair.private_key_pem.write_to_path(str(data / "key.pem"))
        ports = free_ports()
        config = _config(data, mail_uid=user.pw_uid, mail_gid=user.pw_gid,
                         run_uid=user.pw_uid, imap_port=ports.imap, imaps_port=ports.imaps,
                         pop3_port=ports.pop3, pop3s_port=ports.pop3s,
                         stats_port=ports.dovecot_stats)
        conf = dovecot_conf.render(config)
        for path in (data, *data.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid)
        binary = dovecot_conf.dovecot_binary()
        assert binary is not None
        # setpriv changes the user, not Popen(user=...): that makes Python fork and run
        # gRPC's fork handlers, which can abort the child (see cli.platform.spawn_supervised)
        proc = subprocess.Popen(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                                 "--clear-groups", "--", binary, "-F", "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            greeting = _greeting(ports.imap, proc)
            assert greeting.startswith(b"* OK"), greeting
            uids = _tree_uids(proc.pid)
            assert uids and set(uids.values()) == {user.pw_uid}, uids
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _greeting(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dovecot exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                return sock.recv(200)
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"no IMAP greeting on {port} within {timeout}s")


def _tree_uids(root: int) -> dict[int, int]:
    """pid -> uid of `root` and every process below it."""
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        found[pid] = int(status.split("\nUid:")[1].split()[0])
        todo += [int(c) for c in children]
    return found
