"""A mailbox's autoresponder on the old host (QmailAdmin's vacation: `|autorespond TIME NUM
MESSAGE DIR` in the user's .qmail; qmail-autoresponder: `|qmail-autoresponder [-opts]
[MESSAGE] DIR`) comes over as the mailbox's vacation message; one the import cannot read or
that answers for an address without a mailbox stays reported."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.cli.qmail_import.command import describe
from mailyard.cli.qmail_import.plan import MailboxPlan, Plan, Sources, build
from mailyard.cli.qmail_import.problems import UNSUPPORTED
from tests.qmail_tree import OLD_HOME, Tree
from tests.qmail_tree import build as build_tree

HOME = f"{OLD_HOME}/domains/example.test"
# as QmailAdmin writes them (user.c: the .qmail with the Maildir kept, the message file with
# From: and Subject: lines, "%S" standing for the original subject in autorespond)
QMAILADMIN_DOT = (f"| /usr/local/bin/autorespond 86400 3 {HOME}/ann/vacation/message "
                  f"{HOME}/ann/vacation\n{HOME}/ann/Maildir/\n")
QMAILADMIN_MESSAGE = ("From: ann@example.test\nSubject: Re: %S\n\n"
                      "I am away until Monday.\nAnn\n")


def _plan(tree: Tree) -> Plan:
    return build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)


def _mailbox(plan: Plan, address: str) -> MailboxPlan:
    [found] = [m for m in plan.mailboxes if m.address == address]
    return found


def _unsupported(plan: Plan) -> list[str]:
    return [f"{Path(p.path).name}:{p.line}: {p.reason}" for p in plan.problems.sorted()
            if p.kind == UNSUPPORTED]


def test_qmailadmin_vacation_becomes_the_mailbox_autoresponse(tmp_path: Path) -> None:
    tree = build_tree(tmp_path / "old")
    d = tree.domain_dir("example.test")
    tree.write("ann/.qmail", QMAILADMIN_DOT, d)
    tree.write("ann/vacation/message", QMAILADMIN_MESSAGE.replace("\n", "\r\n"), d)
    plan = _plan(tree)
    ann = _mailbox(plan, "ann@example.test")
    assert ann.autoresponse == pb.Autoresponse(
        enabled=True, subject="", body="I am away until Monday.\nAnn\n")
    assert (ann.forward_to, ann.keep_copy) == ([], True)  # delivered as before
    assert not [p for p in _unsupported(plan) if p.startswith(".qmail:")]
    # an autoresponder of an address without a mailbox has nothing to belong to
    assert ".qmail-vacation:1: autoresponder (autorespond): programs are not run by " \
           "Mailyard; not imported" in _unsupported(plan)
    out = io.StringIO()
    describe(plan, out)
    assert "mailbox ann@example.test\t" in out.getvalue()
    assert "\tvacation=on subject=(Re: original)\t" in out.getvalue()


@pytest.mark.parametrize(("command", "files"), [
    ("|qmail-autoresponder -n 1 -t 86400 ./autoresponse",
     {"autoresponse/message.txt": "Subject: Out of office\n\nAway.\n"}),
    (f"|/usr/bin/qmail-autoresponder {HOME}/joe/away.txt {HOME}/joe/autoresponse",
     {"away.txt": "Subject: Out of office\n\nAway.\n"}),
    ("| /usr/bin/autorespond 86400 3 ./vacation/message ./vacation",
     {"vacation/message": "Subject: Out of office %S\n\nAway.\n"}),
])
def test_other_layouts(tmp_path: Path, command: str, files: dict[str, str]) -> None:
    tree = build_tree(tmp_path / "old")
    d = tree.domain_dir("example.test")
    tree.write("joe/.qmail", f"{command}\n./Maildir/\n", d)
    for name, text in files.items():
        tree.write(f"joe/{name}", text, d)
    joe = _mailbox(_plan(tree), "joe@example.test")
    assert joe.autoresponse == pb.Autoresponse(enabled=True, subject="Out of office",
                                               body="Away.\n")


@pytest.mark.parametrize(("message", "reason"), [
    (None, "its message file"),
    ("Subject: x\n\n", "vacation body is empty"),
    ("Subject: x\n\nbell\x07\n", "vacation body must be text"),
])
def test_unreadable_or_unfit_messages_stay_reported(tmp_path: Path, message: str | None,
                                                    reason: str) -> None:
    tree = build_tree(tmp_path / "old")
    d = tree.domain_dir("example.test")
    tree.write("ann/.qmail", QMAILADMIN_DOT, d)
    if message is not None:
        tree.write("ann/vacation/message", message, d)
    plan = _plan(tree)
    assert not _mailbox(plan, "ann@example.test").autoresponse.body
    [problem] = [p for p in _unsupported(plan) if p.startswith(".qmail:1:")]
    assert "autoresponder (autorespond)" in problem and reason in problem
    assert problem.endswith("not imported")
