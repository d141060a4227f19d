"""`mailyard up` argument checks that need no platform (the e2e suite runs `--me` for real)."""

from __future__ import annotations

import pytest

from mailyard.cli.main import main


@pytest.mark.parametrize(("me", "why"), [("localhost", "names this machine only"),
                                         ("mx", "not fully qualified")])
def test_up_refuses_a_bad_me_before_starting(tmp_path: object, me: str, why: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "--data", str(tmp_path), "--me", me]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mailyard: --me:") and why in err and "Traceback" not in err
