"""Copying (or moving) an old Maildir into the platform's mail tree, all or nothing.

A mailbox that has no Maildir on the platform yet is built in a staging directory next to
where it will live (<mail-dir>/<domain>/<local>/.Maildir.import, same filesystem), then
renamed into place in one step once every message is there, the data is on disk and the
maildirsize is recomputed: a reader (local-delivery, Dovecot) sees no Maildir or the whole
one, never half of it. An interrupted run leaves the staging directory behind and the next
run carries on from it: a message already there with the source's size is not copied again.

A Maildir that already exists on the platform (a re-run, or mail delivered since the
mailbox was created) is merged into message by message: each new message is written to
tmp/, fsynced and linked into cur/ or new/, the way local-delivery delivers, and a message
already present (same unique name, whatever its flags) is left alone.

File names are kept, so the flags after ":2," survive, and so are the modification times
(Dovecot takes the received date from them). Maildir++ folders (.Sent, .Folder.Sub) come
along with their maildirfolder marker; Courier's courierimapsubscribed also becomes the
"subscriptions" file Dovecot reads; vdelivermail's quotawarn (its mtime: the time of the last
quota warning) comes with that time, as local-delivery reads it. tmp/ contents, index caches
and the old maildirsize are left behind. Symbolic links in the old tree are never followed.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from mailyard.local_delivery import maildir as ld_maildir
from mailyard.local_delivery import quota as ld_quota

STAGING = ".Maildir.import"
# quotawarn: vdelivermail's time of the last quota warning (its mtime), which local-delivery
# reads the same way
KEEP_FILES = ("maildirfolder", "courierimapsubscribed", "courierimapuiddb",
              "dovecot-uidlist", "dovecot-keywords", "subscriptions", "quotawarn")
SUBS = ("cur", "new")


@dataclass
class Copied:
    messages: int = 0         # copied or moved by this run
    present: int = 0          # already there (resumed or re-run)
    bytes: int = 0
    folders: int = 0


@dataclass(frozen=True)
class Target:
    path: Path                          # <mail-dir>/<domain>/<local>/Maildir
    quota: ld_quota.Quota
    owner: tuple[int, int] | None       # (uid, gid) to chown to, None: leave as created


def base(name: str) -> str:
    """A message's unique part: the name without its ":2,FLAGS" info."""
    return name.partition(":")[0]


def folders(source: Path) -> list[str]:
    """"" (INBOX) and each Maildir++ folder (".Sent") of a Maildir, never via a symlink."""
    found = [""]
    with contextlib.suppress(OSError), os.scandir(source) as entries:
        for entry in entries:
            if (entry.name.startswith(".") and entry.name not in (".", "..")
                    and entry.is_dir(follow_symlinks=False)
                    and any(os.path.isdir(os.path.join(entry.path, s)) for s in SUBS)):
                found.append(entry.name)
    return sorted(found)


def _messages(folder: Path) -> dict[str, tuple[str, str]]:
    """base name -> (sub, file name) of the messages in a folder's cur/ and new/."""
    out: dict[str, tuple[str, str]] = {}
    for sub in SUBS:
        with contextlib.suppress(FileNotFoundError), os.scandir(folder / sub) as entries:
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                    out[base(entry.name)] = (sub, entry.name)
    return out


def _mkdir(path: Path, target: Target) -> None:
    try:
        os.mkdir(path, ld_maildir.DIR_MODE)
    except FileExistsError:
        return
    if target.owner:
        os.chown(path, *target.owner)


def _ensure(path: Path, target: Target) -> None:
    _mkdir(path, target)
    for sub in ("cur", "new", "tmp"):
        _mkdir(path / sub, target)


def _copy(src: str, tmp: str, target: Target, *, sync: bool) -> int:
    """The bytes of `src` into `tmp` (0600, the source's times); returns the size. Opened
    with O_NOFOLLOW: a symlink planted in the old tree is refused, never followed."""
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fin)
        fout = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                       ld_maildir.FILE_MODE)
        try:
            size = 0
            while sent := os.sendfile(fout, fin, None, 1 << 20):
                size += sent
            os.fchmod(fout, ld_maildir.FILE_MODE)   # a leftover tmp of a crashed run
            os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
            if target.owner:
                os.fchown(fout, *target.owner)
            if sync:
                os.fsync(fout)
        finally:
            os.close(fout)
    finally:
        os.close(fin)
    return size


def _place(src: str, tmp: str, final: str, target: Target, *, move: bool, link: bool
           ) -> int:
    """Put one file at `final` via `tmp`; returns its size."""
    size = -1
    if move:
        try:
            size = os.stat(src, follow_symlinks=False).st_size
            os.rename(src, tmp)
            os.chmod(tmp, ld_maildir.FILE_MODE)
            if target.owner:
                os.chown(tmp, *target.owner)
            if link:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError:
            size = -1      # another filesystem: copy (the source is removed afterwards)
    if size < 0:
        size = _copy(src, tmp, target, sync=link)
    if link:            # a live Maildir: durable before visible, never replacing a file
        try:
            os.link(tmp, final)
        finally:
            os.unlink(tmp)
    else:
        os.rename(tmp, final)
    return size


def _copy_folder(src: Path, dest: Path, target: Target, result: Copied, *, move: bool,
                 live: bool, moved: list[Path]) -> None:
    _ensure(dest, target)
    have = _messages(dest)
    src_s, dest_s = str(src), str(dest)      # plain strings: 100,000 files per run
    tmp_s = os.path.join(dest_s, "tmp")
    for key, (sub, name) in sorted(_messages(src).items()):
        source = f"{src_s}/{sub}/{name}"
        final = f"{dest_s}/{sub}/{name}"
        if key in have:
            old_sub, old_name = have[key]
            if live:
                result.present += 1
                continue
            old = f"{dest_s}/{old_sub}/{old_name}"
            if os.stat(old).st_size == os.stat(source, follow_symlinks=False).st_size:
                if old != final:
                    os.rename(old, final)   # flags changed on the old host
                result.present += 1
                continue
            os.unlink(old)   # cut short by a crash before the data reached the disk
        size = _place(source, f"{tmp_s}/{name}.import", final, target, move=move,
                      link=live)
        if move and os.path.lexists(source):
            moved.append(Path(source))
        result.messages += 1
        result.bytes += size
    for name in KEEP_FILES:
        path = src / name
        if path.is_file() and not path.is_symlink() and not (dest / name).exists():
            _place(str(path), f"{tmp_s}/{name}.import", f"{dest_s}/{name}", target,
                   move=False, link=False)
    courier = src / "courierimapsubscribed"
    if not (dest / "subscriptions").exists() and courier.is_file() and not courier.is_symlink():
        names = [line.strip().removeprefix("INBOX.") for line in
                 courier.read_text(errors="replace").splitlines() if line.strip()]
        tmp = dest / "tmp" / "subscriptions.import"
        tmp.write_text("".join(f"{n}\n" for n in names if n and n != "INBOX"))
        _place(str(tmp), f"{tmp_s}/subscriptions.import2", f"{dest_s}/subscriptions",
               target, move=True, link=False)


def import_maildir(source: Path, target: Target, *, move: bool = False) -> Copied:
    """Bring the Maildir at `source` to `target.path`; see the module docstring."""
    result = Copied()
    dest = target.path
    live = dest.exists()
    build = dest if live else dest.parent / STAGING
    if not dest.parents[2].exists():                        # the mail root
        dest.parents[2].mkdir(parents=True)
        if target.owner:
            os.chown(dest.parents[2], *target.owner)
    for parent in reversed(build.parents[:2]):              # <domain>/, <domain>/<local>/
        _mkdir(parent, target)
    moved: list[Path] = []
    if source.is_dir() and not source.is_symlink():
        for folder in folders(source):
            _copy_folder(source / folder if folder else source,
                         build / folder if folder else build, target, result, move=move,
                         live=live, moved=moved)
            result.folders += 1
    else:
        _ensure(build, target)
    if target.quota.enabled:
        ld_quota.rebuild(build, target.quota, target.owner)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(build / ld_quota.FILE)
    if not live:
        os.sync()            # every message on disk before the Maildir appears
        os.rename(build, dest)
        ld_maildir.fsync_dir(dest.parent)
    for path in moved:       # --move across filesystems: the copies are safe now
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return result
