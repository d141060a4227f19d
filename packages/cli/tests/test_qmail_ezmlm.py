"""ezmlm lists of a vpopmail domain come over as lists: members from ezmlm's hashed
subscriber files, the owner from DIR/owner (or .qmail-LIST-owner), who may post from
ezmlm's flags; its -default and -return-default lines are the list's, not reported."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.cli.qmail_import import ezmlm
from mailyard.cli.qmail_import.command import describe
from mailyard.cli.qmail_import.plan import Plan, Sources, build
from mailyard.cli.qmail_import.problems import ERROR, Problems
from tests.qmail_tree import Tree
from tests.qmail_tree import build as build_tree


def _plan(tmp_path: Path, edit: Callable[[Tree], None] | None = None) -> tuple[Tree, Plan]:
    tree = build_tree(tmp_path / "old")
    if edit is not None:
        edit(tree)
    return tree, build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                               tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)


def test_an_ezmlm_list_becomes_a_list(tmp_path: Path) -> None:
    tree, plan = _plan(tmp_path)
    lists = {ml.address: ml for ml in plan.lists}
    news = lists["news@example.test"]
    assert (news.owner, sorted(news.members), news.posting, news.posters) == (
        "bob@example.test", ["ann@example.test", "joe@example.test", "outside@remote.test"],
        pb.POSTING_POLICY_MEMBERS, ["editor@remote.test"])
    # moderated: nothing unmoderated reaches the members, the moderators may post
    board = lists["board@example.test"]
    assert (board.owner, board.members, board.posting, board.posters) == (
        "ann@example.test", ["joe@example.test"], pb.POSTING_POLICY_ANNOUNCE,
        ["ann@example.test"])
    reasons = {(Path(p.path).name, p.reason) for p in plan.problems.items}
    d = tree.domain_dir("example.test")
    assert not [r for n, r in reasons if n in (".qmail-news-default",
                                               ".qmail-news-return-default")]
    assert not [r for n, r in reasons if n == ".qmail-news" and "ezmlm-send" in r]
    assert [r for n, r in reasons if n == ".qmail-board" and "moderation is not supported" in r]
    assert str(d / ".qmail-board") in {p.path for p in plan.problems.items}
    assert not [p for p in plan.problems.items if p.kind == ERROR]


def test_a_bad_subscriber_entry_is_named_and_the_rest_imported(tmp_path: Path) -> None:
    def edit(tree: Tree) -> None:
        d = tree.domain_dir("example.test")
        (d / "news" / "subscribers" / "C").write_bytes(b"Tann@example.test\0Xjunk\0Tno-at\0")
        (d / "news" / "owner").unlink()

    _, plan = _plan(tmp_path, edit)
    errors = sorted((p for p in plan.problems.items if p.kind == ERROR),
                    key=lambda p: p.path)
    assert [Path(p.path).name for p in errors] == ["news", "C", "C"], errors
    assert "Xjunk" in errors[1].reason and "no-at" in errors[2].reason
    # a list needs an owner (bounces go there): named, and the import writes nothing
    assert "no owner" in errors[0].reason
    assert "news@example.test" not in [ml.address for ml in plan.lists]


ADDRESS = st.from_regex(r"[a-z0-9][a-z0-9+-]{0,19}@[a-z0-9]{1,20}\.test", fullmatch=True)


@settings(max_examples=200, deadline=2000)
@given(st.lists(ADDRESS, max_size=20), st.binary(max_size=300))
def test_a_subscriber_file_of_any_bytes_is_read_without_raising(
        tmp_path_factory: object, good: list[str], junk: bytes) -> None:
    """Subscribers wrote their own addresses into these files: whatever else is in one,
    reading it never raises, and every well-formed entry before the junk comes over."""
    folder = Path(tmp_path_factory.mktemp("subs"))  # type: ignore[attr-defined]
    (folder / "@").write_bytes(b"".join(b"T" + a.encode() + b"\0" for a in good) + junk)
    problems = Problems()
    found = ezmlm.subscribers(folder, problems)
    assert found[:len(set(good))] == list(dict.fromkeys(good))


def test_the_dry_run_says_who_may_post(tmp_path: Path) -> None:
    """The dry run showed an ezmlm list as if anyone could post: the postmaster could not
    see that news@ comes over members-only and board@ announce-only."""
    _, plan = _plan(tmp_path)
    out = io.StringIO()
    describe(plan, out)
    lines = {line.split("\t")[0]: line for line in out.getvalue().splitlines()}
    assert "\tposting=members\tposters=editor@remote.test\t" in lines["list news@example.test"]
    assert "\tposting=announce\tposters=ann@example.test\t" in lines["list board@example.test"]
    assert "posting=" not in lines["list team@example.test"]


def test_a_public_ezmlm_list_takes_subscriptions_by_mail(tmp_path: Path) -> None:
    """ezmlm-manage answered news-subscribe@ with a confirmation (DIR/public, ezmlm-make's
    default); imported, every list was closed and its members could no longer join or
    leave by mail. A public list with ezmlm-manage comes over "confirm"; a private one
    (-P, no DIR/public), one whose subscriptions a moderator approved (-s, DIR/modsub:
    reported) or one without ezmlm-manage comes over closed."""
    def edit(tree: Tree) -> None:
        d = tree.domain_dir("example.test")
        home = str(d)
        tree.write("news/public", "", d)
        tree.write("board/public", "", d)   # public, but nothing runs ezmlm-manage
        tree.write("club/public", "", d)
        tree.write("club/modsub", "", d)
        tree.write(".qmail-club", f"|/usr/bin/ezmlm/ezmlm-send '{home}/club'\n", d)
        tree.write(".qmail-club-default", f"|/usr/bin/ezmlm/ezmlm-manage '{home}/club'\n", d)
        tree.write("club/owner", "&bob@example.test\n", d)
        tree.write("club/subscribers/@", b"Tjoe@example.test\0", d)

    _, plan = _plan(tmp_path, edit)
    lists = {ml.address: ml for ml in plan.lists}
    assert lists["news@example.test"].subscription == pb.SUBSCRIPTION_POLICY_CONFIRM
    assert lists["board@example.test"].subscription == pb.SUBSCRIPTION_POLICY_UNSPECIFIED
    assert lists["club@example.test"].subscription == pb.SUBSCRIPTION_POLICY_UNSPECIFIED
    assert [p for p in plan.problems.items if "DIR/modsub" in p.reason]
    out = io.StringIO()
    describe(plan, out)
    lines = {line.split("\t")[0]: line for line in out.getvalue().splitlines()}
    assert "\tsubscription=confirm\t" in lines["list news@example.test"]
    assert "subscription=" not in lines["list board@example.test"]
