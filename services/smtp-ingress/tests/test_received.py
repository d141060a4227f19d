"""The Received: line's date, made once a second."""

from __future__ import annotations

import email.utils

import pytest

from mailyard.smtp_ingress import received


def test_the_date_follows_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_800_000_000.2]
    monkeypatch.setattr(received.time, "time", lambda: now[0])
    first = received.date_now()
    assert first == email.utils.formatdate(1_800_000_000).replace("+0000", "-0000")
    assert first.endswith("-0000")
    now[0] += 0.5
    assert received.date_now() == first  # the same second: made once
    now[0] += 1
    later = received.date_now()
    assert later != first
    assert email.utils.parsedate_to_datetime(later).timestamp() == 1_800_000_001
