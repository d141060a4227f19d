"""What cannot come over from the old host, each with the file and line it came from.

Two kinds, because they call for different answers from the postmaster:

- "error": the line is malformed (a vpasswd line with five fields, a bad IP range, a domain
  name with a space). The import writes nothing while any is left, unless --skip-bad says
  to leave those lines behind.
- "unsupported": the line is valid on qmail but Mailyard has no equivalent (`|maildrop`,
  an autoresponder of an address without a mailbox, `=host` rules in tcp.smtp, system-user
  domains in control/locals). It is reported and the rest is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ERROR = "error"
UNSUPPORTED = "unsupported"


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    line: int            # 1-based; 0 when it concerns the whole file
    kind: str            # ERROR or UNSUPPORTED
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.kind}: {self.reason}"


@dataclass
class Problems:
    items: list[Problem] = field(default_factory=list)

    def error(self, path: Path | str, line: int, reason: str) -> None:
        self.items.append(Problem(str(path), line, ERROR, reason))

    def unsupported(self, path: Path | str, line: int, reason: str) -> None:
        self.items.append(Problem(str(path), line, UNSUPPORTED, reason))

    def extend(self, other: Problems) -> None:
        self.items.extend(other.items)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.kind == ERROR]

    def sorted(self) -> list[Problem]:
        return sorted(set(self.items))
