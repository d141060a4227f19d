"""The admin plane's bounds (mailyard.core.limits) are every service's typed settings: the
module's values by default, raised or lowered within sane bounds, refused at start in one
line naming the setting."""

from __future__ import annotations

import pytest

from mailyard.core.errors import SettingsError
from mailyard.core.settings import ServiceSettings


def test_an_operator_may_raise_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILYARD_COMMON_HTTP_MAX_CONNECTIONS", "2000")
    monkeypatch.setenv("MAILYARD_COMMON_ADMIN_MAX_BODY", str(16 << 20))
    s = ServiceSettings.load()
    assert (s.http_max_connections, s.admin_max_body) == (2000, 16 << 20)


@pytest.mark.parametrize(("name", "value"), [
    ("HTTP_MAX_CONNECTIONS", "0"), ("HTTP_MAX_CONNECTIONS", "-1"),
    ("HTTP_MAX_CONNECTIONS", "1000000000"), ("ADMIN_MAX_BODY", "100"),
    ("ADMIN_MAX_BODY", str(1 << 40)), ("HTTP_REQUEST_TIMEOUT", "nan"),
    ("HTTP_REQUEST_TIMEOUT", "inf"), ("HTTP_REQUEST_TIMEOUT", "0"),
    ("GRPC_MAX_RPCS", "1"), ("GRPC_MAX_IDLE", "1e300"), ("GRPC_MAX_IDLE", "soon"),
])
def test_values_past_their_bounds_are_one_line_naming_the_setting(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"MAILYARD_COMMON_{name}", value)
    with pytest.raises(SettingsError) as refused:
        ServiceSettings.load()
    assert f"MAILYARD_COMMON_{name}:" in str(refused.value)
    assert "\n" not in str(refused.value)
