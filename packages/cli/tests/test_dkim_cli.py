"""`mailyard dkim`: key folder, records, rotation, and one-line errors."""

from __future__ import annotations

import base64
import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest

from mailyard.cli.main import main
from mailyard.core.dkimkeys import DkimKeyError, KeyDir


@dataclass
class Out:
    returncode: int
    stdout: str
    stderr: str


def cli(folder: Path, *args: str) -> Out:
    """The real command line, in this process (a subprocess per call costs seconds)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["dkim", "--dir", str(folder), *args])
    return Out(code, out.getvalue(), err.getvalue())


def record_text(line: str) -> str:
    """The TXT value of a zone line (its quoted strings joined)."""
    return "".join(line.split('"')[1::2])


@pytest.mark.parametrize("key_type", ["ed25519", "rsa"])
def test_keygen_prints_a_record_that_verifies_a_signature(tmp_path: Path,
                                                          key_type: str) -> None:
    out = cli(tmp_path, "keygen", "Example.COM.", "--selector", "s1", "--type", key_type)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("s1._domainkey.example.com. IN TXT ")
    assert "PRIVATE" not in out.stdout + out.stderr
    record = record_text(line)
    assert record.startswith(f"v=DKIM1; k={key_type}; p=")
    key_file = tmp_path / "s1._domainkey.example.com.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "signing").read_text() == "example.com s1\n"
    key = KeyDir(tmp_path).find("example.com", "s1")
    message = b"From: a@example.com\r\nSubject: t\r\n\r\nbody\r\n"
    signed = dkim.sign(message, b"s1", b"example.com", key.private,
                       signature_algorithm=key.algorithm) + message
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record.encode())
    if key_type == "ed25519":  # RFC 8463: p= is the raw 32-byte key
        assert len(base64.b64decode(record.split("p=")[1])) == 32


def test_an_idn_domain_is_named_as_the_directory_and_dns_name_it(tmp_path: Path) -> None:
    """`domain add bücher.example` stores its A-label, and the signer looks keys up by the
    A-label: keygen, record, activate and retire take the U-label too."""
    out = cli(tmp_path, "keygen", "Bücher.example.", "--selector", "s1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("s1._domainkey.xn--bcher-kva.example. IN TXT ")
    assert (tmp_path / "signing").read_text() == "xn--bcher-kva.example s1\n"
    assert cli(tmp_path, "record", "BÜCHER.example", "s1").stdout == out.stdout
    assert cli(tmp_path, "keygen", "bücher.example", "--selector", "s2").returncode == 0
    assert cli(tmp_path, "activate", "bücher.example", "s2").returncode == 0
    assert cli(tmp_path, "retire", "bücher.example", "s1").returncode == 0
    assert KeyDir(tmp_path).signing() == {("xn--bcher-kva.example", "s2")}


def test_rotation_two_selectors_live(tmp_path: Path) -> None:
    folder = KeyDir(tmp_path)
    _, signs = folder.create("example.com", "s1", "rsa")
    assert signs
    _, signs = folder.create("example.com", "s2", "rsa")
    assert not signs                       # published only until activated
    _, signs = folder.create("example.com", "e1", "ed25519")
    assert signs                           # one key per type signs: RSA and Ed25519 at once
    assert folder.signing() == {("example.com", "s1"), ("example.com", "e1")}
    with pytest.raises(DkimKeyError, match="still signs"):
        folder.retire("example.com", "s1")
    folder.activate("example.com", "s2")
    assert folder.signing() == {("example.com", "s2"), ("example.com", "e1")}
    listed = cli(tmp_path, "list").stdout.splitlines()
    assert "example.com\ts1\trsa\tpublished\ts1._domainkey.example.com" in listed
    assert "example.com\ts2\trsa\tsigning\ts2._domainkey.example.com" in listed
    folder.retire("example.com", "s1")
    assert not (tmp_path / "s1._domainkey.example.com.pem").exists()


@pytest.mark.parametrize("args, message", [
    (("keygen", "bad domain"), "invalid domain"),
    (("keygen", "example.com", "--selector=a_b"), "invalid selector"),
    # a line break before the final dot ends up in the key's file name and in `signing`
    (("keygen", "example.com\n."), "invalid domain"),
    (("keygen", "example.com", "--selector=s1\n."), "invalid selector"),
    (("activate", "example.com", "nope"), "no key nope for example.com"),
    (("retire", "example.com", "nope"), "no key nope for example.com"),
])
def test_bad_input_gets_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    out = cli(tmp_path, *args)
    assert out.returncode == 1
    assert out.stderr.strip().startswith("mailyard: ") and message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_duplicate_selector_and_broken_key_file(tmp_path: Path) -> None:
    assert cli(tmp_path, "keygen", "example.com", "--selector", "s1").returncode == 0
    again = cli(tmp_path, "keygen", "example.com", "--selector", "s1")
    assert again.returncode == 1 and "already has a key" in again.stderr
    (tmp_path / "s9._domainkey.example.com.pem").write_text("garbage\n")
    os.chmod(tmp_path / "s9._domainkey.example.com.pem", 0o600)
    out = cli(tmp_path, "list")
    assert out.returncode == 1
    assert "example.com\ts1\ted25519\tsigning" in out.stdout
    assert "s9._domainkey.example.com.pem: not a private key" in out.stderr
    assert "garbage" not in out.stderr
