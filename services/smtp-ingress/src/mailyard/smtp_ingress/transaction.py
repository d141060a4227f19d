"""One mail transaction (MAIL to the end of DATA): what the phases and checks read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailyard.smtp_ingress.syntax import Path

if TYPE_CHECKING:
    from mailyard.core.dkimkeys import DkimKey
    from mailyard.smtp_ingress.data_decoder import DataDecoder
    from mailyard.smtp_ingress.message_body import MessageBody
    from mailyard.smtp_ingress.spf_check import SpfResult


@dataclass
class Transaction:
    sender: Path
    size: int = 0               # SIZE= from MAIL
    body_8bit: bool = False
    smtputf8: bool = False
    recipients: list[str] = field(default_factory=list)
    overshoot: int = 0             # RCPTs refused past MAX_RECIPIENTS
    candidate: Path | None = None   # the RCPT being checked
    candidate_srs: bool = False     # it is the reversal of a valid SRS address (srs_rcpt)
    body: MessageBody | None = None  # from DATA on: the message, without our Received:
    real_size: int = 0
    decoder: DataDecoder | None = None  # from the end of DATA: what it found (Lines facts)
    sign_with: list[DkimKey] = field(default_factory=list)  # set by data_dkim
    spf: SpfResult | None = None          # mail_spf: MAIL FROM (or HELO for <>)
    spf_helo: SpfResult | None = None     # mail_spf: the HELO identity
    scan_headers: bytes = b""              # data_rspamd: X-Spamd-Result, X-Spam
    auth_results: bytes = b""              # data_dmarc: our Authentication-Results line
    sender_unverified: bool = False        # data_dmarc: neither SPF nor DKIM vouched for it
