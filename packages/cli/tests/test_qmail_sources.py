"""The old host's files as the import finds them: whatever sits where a file should be (a
FIFO, a device, a symlink loop, a path through a file) is one reported problem with its
path, and the rest of the tree is still planned."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mailyard.cli.qmail_import.plan import Sources, build
from mailyard.cli.qmail_import.problems import ERROR
from tests.qmail_tree import Tree
from tests.qmail_tree import build as build_tree


def _fifo(tree: Tree) -> Path:              # open() would wait for a writer forever
    path = tree.domain_dir("example.test") / "joe" / ".qmail"
    os.mkfifo(path)
    return path


def _device(tree: Tree) -> Path:            # stat() says 0 bytes, read() never ends
    path = tree.qmail / "control" / "badmailfrom"
    path.unlink()
    path.symlink_to("/dev/zero")
    return path


def _loop(tree: Tree) -> Path:
    path = tree.qmail / "control" / "rcpthosts"
    path.unlink()
    path.symlink_to("rcpthosts")
    return path


def _directory(tree: Tree) -> Path:
    path = tree.qmail / "control" / "locals"
    path.unlink()
    path.mkdir()
    return path


def _through_a_file(tree: Tree) -> Path:
    return tree.tcp_smtp / "open-smtp"


@pytest.mark.parametrize("plant", [_fifo, _device, _loop, _directory,
                                   _through_a_file])
def test_what_is_no_file_is_reported_and_the_rest_planned(tmp_path: Path,
                                                        plant: Callable[[Tree], Path]) -> None:
    tree = build_tree(tmp_path / "old")
    bad = plant(tree)
    open_smtp = bad if plant is _through_a_file else tree.open_smtp
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=open_smtp), now=tree.now)
    assert [(p.path, p.line, p.kind) for p in plan.problems.sorted() if p.kind == ERROR] \
        == [(str(bad), 0, ERROR)]
    assert [m.address for m in plan.mailboxes] == [
        "joe@example.test", "ann@example.test", "bob@example.test", "carl@example.org"]
