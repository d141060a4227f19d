"""docs/runbook.md: answers the help page's questions, and every `mailyard ...` command it
tells an operator to type is one the CLI accepts."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.deploy.tools import ROOT

RUNBOOK = (ROOT / "docs" / "runbook.md").read_text()
PLACEHOLDERS = {"<queue-id>": "01JD0000000000000000000000", "<id>": "01JD0000000000000000000000",
                "<client-ip>": "192.0.2.1", "IP": "192.0.2.1", "DOMAIN": "example.com",
                "HOST": "mx.example.com", "[--dry-run]": "--dry-run",
                "[--state deferred]": "--state deferred",
                "[--domain example.com]": "--domain example.com"}


def commands() -> list[str]:
    found = re.findall(r"`(mailyard [^`]*)`", RUNBOOK)
    return sorted({c for c in found if "..." not in c and not c.endswith("--help")})


def test_help_page_questions_are_answered() -> None:
    for heading in ("## Why is mail stuck in the queue?", "## Who may relay?",
                    "## Why does the server answer 553?", "## Why did this message bounce?",
                    "## Is the remote MX alive?"):
        assert heading in RUNBOOK


@pytest.mark.parametrize("command", commands())
def test_runbook_command_parses(command: str) -> None:
    from mailyard.cli.main import build_parser

    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value)
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`{command}` is not a valid mailyard command (exit {exc.code})")
