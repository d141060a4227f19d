"""Policy checks, Haraka-style: one small module per check, named <phase>_<check>, each
`async def check(session) -> Verdict`, run in the order the settings give. The first
check that does not accept decides (reject = 5xx, tempfail = 4xx); all accepting means go.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session

CHECKS = {
    "mail": ("mail_auth_required", "mail_badmailfrom", "mail_size", "mail_nullmx", "mail_spf",
             "mail_sender_login"),
    "rcpt": ("rcpt_limit", "rcpt_dnsbl", "rcpt_rcpthosts", "rcpt_unknown_user",
             "rcpt_greylist"),
    "data": ("data_size", "data_header_size", "data_hops", "data_list_posting", "data_dmarc",
             "data_rspamd", "data_dkim"),
}

@dataclass(frozen=True)
class Verdict:
    reply: str = ""     # "" accepts
    reason: str = ""    # label of mailyard_smtp_rejections_total

    @property
    def accepted(self) -> bool:
        return not self.reply

    @property
    def kind(self) -> str:
        return "accept" if not self.reply else ("tempfail" if self.reply[0] == "4" else "reject")


ACCEPT = Verdict()
Check = Callable[["Session"], Awaitable[Verdict]]
_loaded: dict[str, Check] = {}


def known(phase: str) -> tuple[str, ...]:
    return CHECKS[phase]


def load(name: str) -> Check:
    check = _loaded.get(name)
    if check is None:
        if not any(name in names for names in CHECKS.values()):
            raise KeyError(name)
        module = importlib.import_module(f"mailyard.smtp_ingress.policy.{name}")
        check = _loaded[name] = module.check
    return check


async def run(phase: str, session: Session, only: tuple[str, ...] | None = None) -> Verdict:
    """The phase's configured checks in order (only those in `only`, if given)."""
    for name in session.settings.checks(phase):
        if only is not None and name not in only:
            continue
        verdict = await load(name)(session)
        if not verdict.accepted:
            return verdict
    return ACCEPT
