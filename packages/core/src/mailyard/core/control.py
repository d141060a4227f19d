"""qmail control files (smtproutes, badmailfrom, rcpthosts, databytes, queuelifetime,
concurrencyremote, concurrencylocal, dnsbl, tcp.smtp, ...) in the KV bucket "control".

Values are the files' qmail text; services parse what they use and re-parse on change.
Each file's version (a short content hash) is exported as a metric, so an operator sees which
rules every replica runs.
"""

from __future__ import annotations

import hashlib

from prometheus_client import Gauge

from mailyard.core import bus
from mailyard.core.kvview import KVView

CONTROL_VERSION = Gauge(
    "mailyard_control_file_info",
    "Control file version this process runs (value 1; version is a short content hash).",
    ["file", "version"],
)

# Every file some service reads. The directory refuses to store any other name: a typo
# (`databyte`) would otherwise be kept and silently do nothing. A new control file is added here.
KNOWN_FILES = (
    "badmailfrom", "concurrencylocal", "concurrencyremote", "databytes", "defaultdomain", "dnsbl",
    "dmarcpolicy", "greylist", "greylistexempt", "me", "postmaster", "queuelifetime",
    "quotawarn.msg", "rcpthosts", "rspamd", "smtproutes", "spfpolicy", "srs", "srsdomain",
    "tcp.smtp",
)
# Files kept per domain as `<name>.<domain>` (the domain's A-label, lower case), each
# overriding `<name>` for that domain (vpopmail's domains/DOMAIN/.quotawarn.msg).
PER_DOMAIN_FILES = ("quotawarn.msg",)
# vpopmail's default domain: the domain of a login name without one (relay-auth).
DEFAULT_DOMAIN_FILE = "defaultdomain"
# The domain our SRS addresses are made at instead of the forwarder's (mailyard.core.srs);
# read by local-delivery (writing and reversing them), smtp-ingress (RCPT) and the queue
# (routing its own bounces to them locally).
SRS_DOMAIN_FILE = "srsdomain"


def version_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def lines(text: str) -> list[str]:
    """Meaningful lines of a control file: stripped, without blanks and # comments."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def valid_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "._-" for c in name) and name[0] != "."


class ControlView(KVView):
    def __init__(self) -> None:
        super().__init__(bus.KV_CONTROL)
        self._versions: dict[str, str] = {}
        self.on_change(self._export)

    def text(self, name: str, default: str = "") -> str:
        raw = self.data.get(name)
        return raw.decode() if raw is not None else default

    def lines(self, name: str) -> list[str]:
        return lines(self.text(name))

    def integer(self, name: str, default: int) -> int:
        values = self.lines(name)
        try:
            return int(values[0]) if values else default
        except ValueError:
            return default

    def version(self, name: str) -> str:
        return version_of(self.text(name))

    def _export(self, key: str, value: bytes | None) -> None:
        old = self._versions.pop(key, None)
        if old is not None:
            CONTROL_VERSION.remove(key, old)
        version = version_of(value.decode() if value is not None else "")
        self._versions[key] = version
        CONTROL_VERSION.labels(key, version).set(1)


def srs_domain(view: ControlView) -> str:
    """control/srsdomain in lower case without a trailing dot; "" when there is none."""
    values = view.lines(SRS_DOMAIN_FILE)
    return values[0].lower().rstrip(".") if values else ""
