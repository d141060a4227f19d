"""A mailbox's autoresponder line in its .qmail, brought over as the mailbox's vacation
message (Mailbox.autoresponse), in the two layouts vpopmail hosts used:

    | /usr/local/bin/autorespond TIME NUM MESSAGE DIR [FLAG ARSENDER]   (QmailAdmin's vacation)
    | qmail-autoresponder [-opts] MESSAGE DIR
    | qmail-autoresponder [-opts] DIR                                  (DIR/message.txt)

The message file is a header (From:, Subject:, ...) and a body after a blank line, or a body
alone. Only the subject and body come over: "%S" (the original subject, in autorespond's and
qmail-autoresponder's subjects) is left out, and a subject that was only "%S" or "Re: %S"
becomes Mailyard's default, "Re: " and the original subject. TIME / NUM / -t / -n (the
program's own rate limit) do not: local-delivery answers a sender once per
MAILYARD_LOCAL_AUTOREPLY_INTERVAL (7 days). Paths are the old host's, relative ones under the
.qmail's home, read in the copy being imported.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from pathlib import Path

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.cli.qmail_import.dotqmail import Program
from mailyard.cli.qmail_import.sourcefile import Unreadable, read_lines
from mailyard.directory import validate
from mailyard.directory.errors import Refused

NAMES = ("autorespond", "qmail-autoresponder")
_FIELD = re.compile(r"[!-9;-~]+:")
_DEFAULT_SUBJECTS = ("", "re:")


def is_autoresponder(program: Program) -> bool:
    return program.name in NAMES


def _message_path(program: Program, home: str, local: Callable[[str], Path]) -> str | None:
    """The old host's path of the message file, None when the line has no room for one."""
    words = program.words[1:]
    if program.name == "autorespond":
        return posixpath.normpath(posixpath.join(home, words[2])) if len(words) >= 4 else None
    positional = [w for w in words if not w.startswith("-")]
    if not positional:
        return None
    if len(positional) >= 2:
        candidate = posixpath.normpath(posixpath.join(home, positional[-2]))
        if local(candidate).is_file():
            return candidate
    return posixpath.normpath(posixpath.join(home, positional[-1], "message.txt"))


def _subject_and_body(lines: list[str]) -> tuple[str, str]:
    subject, start = "", 0
    if lines and _FIELD.match(lines[0]):
        for number, line in enumerate(lines):
            if not line.strip():
                start = number + 1
                break
            name, _, value = line.partition(":")
            if name.strip().lower() == "subject":
                subject = value.strip()
        else:
            start = len(lines)
    subject = " ".join(subject.replace("%S", "").split())
    if subject.lower() in _DEFAULT_SUBJECTS:
        subject = ""
    return subject, "".join(line + "\n" for line in lines[start:])


def autoresponse(program: Program, home: str, local: Callable[[str], Path]
                 ) -> tuple[pb.Autoresponse | None, str]:
    """The vacation message `program` sends, or (None, why it cannot come over)."""
    path = _message_path(program, home, local)
    if path is None:
        return None, "its message file is not on the line"
    try:
        lines = read_lines(local(path))
    except Unreadable as exc:
        return None, f"its message file cannot be read ({exc})"
    if lines is None:
        return None, f"its message file {path} is not there"
    subject, body = _subject_and_body(lines)
    try:
        return validate.autoresponse(pb.Autoresponse(enabled=True, subject=subject,
                                                     body=body)), ""
    except Refused as exc:
        return None, f"{path}: {exc.message}"
