"""relay-auth settings (env prefix MAILYARD_RELAYAUTH_), validated at start."""

from __future__ import annotations

from pydantic import Field, field_validator

from mailyard.core.settings import ServiceSettings, service_config

# qmail's out-of-the-box rule set: relay for loopback only, everybody else may connect and
# deliver to local domains. Used while the "control" bucket holds no "tcp.smtp".
DEFAULT_RULES = '127.:allow,RELAYCLIENT=""\n:allow\n'


class Settings(ServiceSettings):
    model_config = service_config("RELAYAUTH")

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50055, ge=0, le=65535)
    lease_ttl: float = Field(default=10800.0, gt=0)           # POP-before-SMTP: 3 hours
    lease_purge_interval: float = Field(default=60.0, gt=0)   # background purge of expired
    auth_fail_limit_ip: int = Field(default=10, ge=1)
    auth_fail_limit_user: int = Field(default=5, ge=1)
    auth_fail_window: float = Field(default=900.0, gt=0)
    cram_ttl: float = Field(default=300.0, gt=0)              # an unanswered challenge dies
    default_rules: str = DEFAULT_RULES

    @field_validator("default_rules")
    @classmethod
    def _no_open_relay(cls, value: str) -> str:
        # Refuse an insecure default: a catch-all rule that sets RELAYCLIENT is an open relay.
        from mailyard.relay_auth.rules import RuleError, parse

        try:
            rules = parse(value)
        except RuleError as exc:
            raise ValueError(str(exc)) from None
        for rule in rules:
            if rule.pattern == "" and rule.allow and "RELAYCLIENT" in rule.env:
                raise ValueError("a catch-all rule with RELAYCLIENT makes an open relay")
        return value
