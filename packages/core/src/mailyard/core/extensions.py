"""Address extensions (qmail's user-ext, Postfix's recipient_delimiter): joe+news@ is joe@
with the extension "news", when no joe+news@ exists.

The local part is split at the first delimiter character, as Postfix and vpopmail's
--enable-qmail-ext do, so first-last+tag@ with "-+" is first@'s. A delimiter in the first
place leaves nothing to deliver to: no split (+news@ is only ever itself).
"""

from __future__ import annotations

DEFAULT = "+"
# RFC 5322 atext other than letters and digits: what a local part may hold unquoted. Not
# ".", which separates first.last, nor "@", quotes or blanks.
ALLOWED = frozenset("!#$%&'*+-/=?^_`{|}~")
MAX_DELIMITERS = 8


def base(local: str, delimiters: str) -> str | None:
    """The local part without its extension, or None when it has none."""
    for i, char in enumerate(local):
        if char in delimiters:
            return local[:i] if i else None
    return None


def problem(delimiters: str) -> str | None:
    """Why this is no delimiter setting, or None when it is one."""
    if len(delimiters) > MAX_DELIMITERS:
        return f"at most {MAX_DELIMITERS} delimiter characters"
    if len(set(delimiters)) != len(delimiters):
        return "a delimiter character is given twice"
    if bad := [c for c in delimiters if c not in ALLOWED]:
        return (f"{bad[0]!r} cannot separate an extension; use some of "
                f"{''.join(sorted(ALLOWED))}")
    return None
