"""`mailyard`: run the platform and administer it, the way qmail's tools did.

Each area registers its own subcommands (one module per area); every command talks to a
service over gRPC and prints plain text an operator can grep.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import grpc

from mailyard.cli import (
    control,
    delimiter,
    directory,
    dkim,
    history,
    queue,
    relay,
    route,
    tokens,
    up,
    vacation,
)
from mailyard.cli.qmail_import import command as qmail_import
from mailyard.core.errors import MailyardError

AREAS = (up, queue, history, directory, vacation, delimiter, relay, route, control, dkim,
         qmail_import, tokens)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailyard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in AREAS:
        area.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader gone shows here, not in the interpreter's exit
        return status
    except BrokenPipeError:
        # `mailyard user list | head`: the reader has what it wanted; stop quietly, as cat
        # does, with the shell's status for SIGPIPE (stdout is pointed at /dev/null, so the
        # interpreter's last flush has nowhere to fail)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            print(f"mailyard: service unavailable ({details}); is `mailyard up` running?",
                  file=sys.stderr)
        else:
            name = code.name if code else "ERROR"
            print(f"mailyard: {name}: {details}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file argument that cannot be read (rules import FILE, ...)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"mailyard: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:
        # a file that is not UTF-8; stdin's undecodable bytes surface only when encoded
        print(f"mailyard: input is not UTF-8 text ({exc.reason} at {exc.start})",
              file=sys.stderr)
        return 1
    except MailyardError as exc:  # e.g. an unreadable token file
        print(f"mailyard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
