"""What the old vpopmail kept in a database rather than in the files the import reads, told
by the defines of its build (~vpopmail/include/vpopmail_config.h, as qmailext reads it).

With an SQL or LDAP backend (USE_MYSQL, USE_POSTGRES, ...) the users were there: vpasswd files
found beside it are a copy (vconvert -c writes them) or left from before the conversion. With
VALIAS (--enable-valias, SQL and LDAP only) aliases were rows of the valias table, not
.qmail files. With ENABLE_MYSQL_LIMITS the domains' limits were in MySQL, not in
.qmailadmin-limits, so the logins they refused cannot be known here. Each is reported once
at its define; without the header nothing can be told (qmailext says so already).
"""

from __future__ import annotations

from pathlib import Path

from mailyard.cli.qmail_import.problems import Problems
from mailyard.cli.qmail_import.qmailext import HEADER
from mailyard.cli.qmail_import.sourcefile import Unreadable, read_lines

BACKENDS = {"USE_MYSQL": "MySQL", "USE_POSTGRES": "PostgreSQL", "USE_LDAP": "LDAP",
            "USE_ORACLE": "Oracle", "USE_SYBASE": "Sybase", "USE_SQLITE": "SQLite"}
REASONS = {
    **{name: f"vpopmail kept its users in {db}, not in vpasswd: only what the vpasswd files "
             "hold is imported (write them from the database with vconvert first, or they "
             "may be stale)" for name, db in BACKENDS.items()},
    "VALIAS": "vpopmail kept aliases in its database's valias table (--enable-valias), not "
              "in .qmail files: they are not imported (list them with valias -s DOMAIN and "
              "add them with mailyard alias add)",
    "ENABLE_MYSQL_LIMITS": "vpopmail kept the domains' limits in MySQL "
                           "(--enable-mysql-limits), not in .qmailadmin-limits: the logins "
                           "they refused (disable_pop, disable_smtp, ...) are not known here "
                           "and those accounts come over open",
}


def report(vpopmail_dir: Path, problems: Problems) -> None:
    path = vpopmail_dir / HEADER
    try:
        lines = read_lines(path)
    except Unreadable:
        return                     # qmailext reports it
    for number, line in enumerate(lines or [], 1):
        words = line.split()
        if words[:1] == ["#define"] and len(words) > 1 and words[1] in REASONS:
            problems.unsupported(path, number, REASONS[words[1]])
