"""Maildirs brought over: names (flags), folders, mtimes, maildirsize, staging + rename,
resuming an interrupted copy, merging into a live Maildir, --move, and the old tree left as
it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailyard.cli.qmail_import import maildirs
from mailyard.local_delivery.quota import Quota
from tests.qmail_tree import build, message, put_message


def _tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _names(maildir: Path) -> set[str]:
    return {str(p.relative_to(maildir)) for p in maildir.rglob("*")
            if p.is_file() and p.parent.name in ("cur", "new")}


@pytest.fixture
def joe(tmp_path: Path) -> Path:
    return build(tmp_path / "old").maildir("example.test", "joe")


def test_copy_keeps_names_folders_mtimes_and_recomputes_maildirsize(joe: Path,
                                                                     tmp_path: Path) -> None:
    before = _tree_state(joe)
    dest = tmp_path / "mail" / "example.test" / "joe" / "Maildir"
    copied = maildirs.import_maildir(joe, maildirs.Target(dest, Quota(10_000_000, 0), None))
    assert (copied.messages, copied.present, copied.folders) == (5, 0, 3)
    assert _names(dest) == {
        "cur/1065871320.M1P100.mx1,S=120:2,S", "cur/1065871321.M2P100.mx1:2,RS",
        "new/1065871322.M3P100.mx1", ".Sent/cur/1065871324.M5P100.mx1:2,S",
        ".Archive.2003/cur/1065871325.M6P100.mx1:2,FS"}
    assert os.listdir(dest / "tmp") == []  # the half delivery in the old tmp/ stays there
    read = dest / "cur" / "1065871321.M2P100.mx1:2,RS"
    assert read.read_bytes() == message("answered")
    assert read.stat().st_mtime == 1065871320 and read.stat().st_mode & 0o777 == 0o600
    assert (dest / ".Sent" / "maildirfolder").exists()
    assert (dest / "subscriptions").read_text() == "Sent\nArchive.2003\n"
    size_line = (dest / "maildirsize").read_text().splitlines()
    # ",S=120" in the first name is what Maildir++ counts for it; the others by stat()
    sizes = 120 + sum(len(message(s)) for s in ("answered", "unread", "sent", "flagged"))
    assert size_line == ["10000000S", f"{sizes} 5"]
    assert not (dest.parent / maildirs.STAGING).exists()
    assert _tree_state(joe) == before  # nothing on the old host changed


def test_no_quota_means_no_maildirsize(joe: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mail" / "d" / "joe" / "Maildir"
    maildirs.import_maildir(joe, maildirs.Target(dest, Quota(), None))
    assert not (dest / "maildirsize").exists()


def test_interrupted_copy_resumes_and_is_never_half_visible(joe: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    dest = tmp_path / "mail" / "d" / "joe" / "Maildir"
    calls = {"n": 0}
    real = maildirs._place

    def crash_on_third(*args: object, **kwargs: object) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(maildirs, "_place", crash_on_third)
    with pytest.raises(OSError):
        maildirs.import_maildir(joe, maildirs.Target(dest, Quota(), None))
    assert not dest.exists()  # nothing visible yet
    staging = dest.parent / maildirs.STAGING
    assert len(_names(staging)) == 2
    # a crash before the data reached the disk leaves a short file: copied again
    short = next((staging / "cur").iterdir())
    short.write_bytes(b"")
    monkeypatch.setattr(maildirs, "_place", real)
    copied = maildirs.import_maildir(joe, maildirs.Target(dest, Quota(), None))
    assert (copied.messages, copied.present) == (4, 1)
    assert len(_names(dest)) == 5 and short.name in os.listdir(dest / "cur")
    assert (dest / "cur" / short.name).stat().st_size > 0


def test_rerun_merges_into_the_live_maildir_without_duplicates(joe: Path,
                                                               tmp_path: Path) -> None:
    dest = tmp_path / "mail" / "d" / "joe" / "Maildir"
    target = maildirs.Target(dest, Quota(), None)
    maildirs.import_maildir(joe, target)
    # the user read a message on the new platform; a new one arrived on the old host
    os.rename(dest / "new" / "1065871322.M3P100.mx1", dest / "cur" / "1065871322.M3P100.mx1:2,S")
    put_message(joe, "new", "1065871399.M10P100.mx1", message("late"))
    copied = maildirs.import_maildir(joe, target)
    assert (copied.messages, copied.present) == (1, 5)
    assert "cur/1065871322.M3P100.mx1:2,S" in _names(dest)      # the new flags stay
    assert "new/1065871399.M10P100.mx1" in _names(dest)
    assert len(_names(dest)) == 6


def test_move_empties_the_old_maildir(joe: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mail" / "d" / "joe" / "Maildir"
    copied = maildirs.import_maildir(joe, maildirs.Target(dest, Quota(), None), move=True)
    assert copied.messages == 5 and len(_names(dest)) == 5
    assert _names(joe) == set()


def test_symlinks_in_the_old_tree_are_not_followed(joe: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0")
    os.symlink(secret, joe / "cur" / "1065871400.M11P100.mx1:2,S")
    os.symlink(tmp_path, joe / ".Evil")
    dest = tmp_path / "mail" / "d" / "joe" / "Maildir"
    maildirs.import_maildir(joe, maildirs.Target(dest, Quota(), None))
    assert len(_names(dest)) == 5 and not (dest / ".Evil").exists()


def test_missing_old_maildir_gives_an_empty_one(tmp_path: Path) -> None:
    dest = tmp_path / "mail" / "d" / "new" / "Maildir"
    copied = maildirs.import_maildir(tmp_path / "nowhere", maildirs.Target(dest, Quota(), None))
    assert copied.messages == 0 and sorted(os.listdir(dest)) == ["cur", "new", "tmp"]


def test_vdelivermails_quota_warning_stamp_comes_with_its_time(joe: Path,
                                                               tmp_path: Path) -> None:
    """vdelivermail kept the time of its last quota warning as the mtime of Maildir/quotawarn,
    the file local-delivery reads: without it, a user warned on the old host this morning
    was warned again by the first delivery after the cut-over."""
    stamp = joe / "quotawarn"
    stamp.write_bytes(b"")
    os.utime(stamp, (1065871400, 1065871400))
    dest = tmp_path / "mail" / "example.test" / "joe" / "Maildir"
    maildirs.import_maildir(joe, maildirs.Target(dest, Quota(10_000_000, 0), None))
    assert (dest / "quotawarn").stat().st_mtime == 1065871400
    assert (dest / "quotawarn").stat().st_mode & 0o777 == 0o600
