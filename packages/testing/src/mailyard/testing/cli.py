"""The `mailyard` command as a user runs it: a child process against a running platform."""

from __future__ import annotations

import os
import subprocess
import sys


def run_mailyard(env: dict[str, str], *args: str, stdin: str = "", check: bool = True) -> str:
    """`mailyard ARGS` with the platform's environment (Platform.cli_env()): stdout and
    stderr together; a non-zero exit fails the test unless check=False."""
    proc = subprocess.run([sys.executable, "-m", "mailyard.cli.main", *args], input=stdin,
                          capture_output=True, text=True, env={**os.environ, **env},
                          timeout=30, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"mailyard {' '.join(args)} -> {proc.returncode}\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr
