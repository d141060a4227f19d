"""bench.sender_auth with tiny numbers: every mode runs against a real platform and its
loopback DNS server, and the ingress counters prove each mode measured what it says
(signed, or SPF + DKIM + DMARC passed for the pre-signed mail from outside)."""

from __future__ import annotations

import json
from pathlib import Path

import dkim
import pytest

from bench import sender_auth


def test_every_mode_is_accepted_and_verified(tmp_path: Path) -> None:
    out = tmp_path / "sender_auth.json"
    assert sender_auth.main(["--rounds", "1", "--messages", "20", "--warmup", "5",
                             "--concurrency", "5", "--pause", "0", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert sorted(report["medians"]) == sorted(sender_auth.MODES)
    for run in report["runs"]:
        assert (run["sent"], run["failed"], run["unverified"]) == (20, 0, []), run


def test_mail_from_outside_is_signed_for_its_own_domain(tmp_path: Path) -> None:
    key = sender_auth.SenderKey(tmp_path)
    body = sender_auth.message("news@r1.repeat.test", 7, 2000)
    signed = key.sign(body, "r1.repeat.test")
    assert signed.endswith(body)
    assert b"d=r1.repeat.test" in signed[:len(signed) - len(body)].replace(b"\r\n\t", b" ")
    zone = sender_auth.sender_zone(["r1.repeat.test"], key)
    record = "".join(part.strip('"') for part in
                     zone["s2048._domainkey.r1.repeat.test"]["TXT"][0].split('" "'))
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record.encode())


def test_unknown_mode_is_refused_with_a_clear_message(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        sender_auth.main(["--modes", "baseline,nonsense"])
    assert stopped.value.code == 2
    assert "unknown mode(s) ['nonsense']" in capsys.readouterr().err
