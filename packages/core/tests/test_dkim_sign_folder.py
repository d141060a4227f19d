"""The signer's key folder when it cannot be read (DKIM_DIR naming a file, a host folder
the service's uid may not open): smtp-ingress and remote-delivery start, mail goes out
unsigned with one warning, and the keys are taken once the folder can be read. It ended
the service at start with a traceback (OSError from listing the folder), and with it
all mail, for want of a signature."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from mailyard.core.dkim_sign import RELOAD, Signer
from mailyard.core.dkimkeys import KeyDir


def test_an_unreadable_key_folder_signs_nothing_and_is_read_once_it_can_be(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "dkim"
    path.write_text("not a folder\n")   # e.g. MAILYARD_DKIM_DIR naming the signing file
    with caplog.at_level(logging.WARNING, logger="mailyard.core.dkim_sign"):
        signer = Signer(path)
        assert signer.keys_for_message(b"From: a@example.com\r\n\r\nhi\r\n") == []
        time.sleep(RELOAD)
        assert signer.keys_for("example.com") == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dkim key folder not read" in warnings[0], warnings
    assert str(path) in warnings[0]

    path.unlink()
    KeyDir(path).create("example.com", "s1", "ed25519")
    time.sleep(RELOAD)
    assert [k.selector for k in signer.keys_for("example.com")] == ["s1"]
