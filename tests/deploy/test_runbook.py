"""docs/runbook.md answers the help page's questions, and every `mailyard ...` command it or
README.md tells an operator to type (inline or in a code block) is one the CLI accepts."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.deploy.tools import ROOT

RUNBOOK = (ROOT / "docs" / "runbook.md").read_text()
README = (ROOT / "README.md").read_text()
PLACEHOLDERS = {"<queue-id>": "01JD0000000000000000000000", "<id>": "01JD0000000000000000000000",
                "<client-ip>": "192.0.2.1", "IP": "192.0.2.1", "DOMAIN": "example.com",
                "HOST": "mx.example.com", "[--dry-run]": "--dry-run",
                "[--state deferred]": "--state deferred",
                "[--domain example.com]": "--domain example.com",
                "HOST[:PORT]": "mx.example.com:25", "ADDRESS": "a@example.com",
                "TARGET": "b@example.com", "SELECTOR": "sel", "U": "u@example.com",
                "NAME": "databytes", "<sender>": "a@example.com", "S": "Away",
                "F": "away.txt", "[--from WHEN]": "--from 2026-12-24",
                "[--until WHEN]": "--until 2027-01-04T08:00"}


def commands(text: str) -> list[str]:
    """Inline `mailyard ...` and the code blocks' lines (continuations joined, comments and
    shell redirections cut); `a|b|c` stands for three commands."""
    found = re.findall(r"`(mailyard [^`]*)`", text)
    found += re.findall(r"^ {4,}(mailyard (?:\\\n|[^#\n])*)", text, re.M)
    result = set()
    for text_found in found:
        command = " ".join(text_found.replace("\\\n", " ").split())
        command = re.sub(r"\s[<>]\s+\S+$", "", command)  # `... < secret`
        if "..." in command or command.endswith("--help"):
            continue
        words = command.split()
        alternatives = next((w for w in words if "|" in w and not w.startswith("-")), None)
        for choice in alternatives.split("|") if alternatives else [None]:
            result.add(" ".join(choice if w == alternatives else w for w in words))
    return sorted(result)


def test_help_page_questions_are_answered() -> None:
    for heading in ("## Why is mail stuck in the queue?", "## Who may relay?",
                    "## Why does the server answer 553?", "## Why did this message bounce?",
                    "## Is the remote MX alive?"):
        assert heading in RUNBOOK


@pytest.mark.parametrize("command", sorted({*commands(RUNBOOK), *commands(README)}))
def test_documented_command_parses(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A whole command must parse; a command named without its arguments ("`mailyard domain
    add`, `mailyard user add`") must exist."""
    from mailyard.cli.main import build_parser

    for placeholder, value in PLACEHOLDERS.items():  # whole words only ("U", not a U in it)
        command = re.sub(rf"(?<![\w-]){re.escape(placeholder)}(?![\w-])", value, command)
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        bare = all(not w.startswith("-") and w.isalpha() for w in argv)
        if not (bare and "required" in capsys.readouterr().err):
            pytest.fail(f"`{command}` is not a valid mailyard command (exit {exc.code})")
        with pytest.raises(SystemExit) as shown:
            build_parser().parse_args([*argv, "--help"])
        assert shown.value.code == 0, command
