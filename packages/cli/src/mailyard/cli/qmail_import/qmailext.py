"""Did the old host deliver joe-news@ to joe@? vpopmail built with --enable-qmail-ext does
(its vdelivermail strips from the first "-" when joe-news@ is not a user), and its build
defines QMAIL_EXT in the vpopmail_config.h it installs under ~vpopmail/include. Without that
file the import cannot tell, and leaves the platform's recipient delimiter as it is.
"""

from __future__ import annotations

from pathlib import Path

from mailyard.cli.qmail_import.problems import Problems
from mailyard.cli.qmail_import.sourcefile import Unreadable, read_lines

HEADER = Path("include") / "vpopmail_config.h"
QMAIL_DELIMITER = "-"


def delimiter(vpopmail_dir: Path, problems: Problems) -> tuple[str, str] | None:
    """("-", "file:line") when the old vpopmail had qmail-ext, else None."""
    path = vpopmail_dir / HEADER
    try:
        lines = read_lines(path)
    except Unreadable as exc:
        problems.unsupported(path, 0, f"{exc}: whether the old host took joe-ext@ for joe@ "
                             "is not known (mailyard delimiter set - if it did)")
        return None
    for number, line in enumerate(lines or [], 1):
        if line.split()[:2] == ["#define", "QMAIL_EXT"]:
            return QMAIL_DELIMITER, f"{path}:{number}"
    return None
