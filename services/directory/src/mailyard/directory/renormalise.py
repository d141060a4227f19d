"""Records written before local parts were matched in NFC (core.addresses.normalise_local)
sit under the key of the form they were typed in, a key no lookup computes any more: their
mail was refused as an unknown user and their logins failed. The directory moves each to the
key of its NFC form once, when it starts, before it serves.

Only records whose local part is not ASCII and not NFC move, so a directory of ASCII names
decodes its keys and writes nothing. A mailbox keeps the maildir its mail is in (named as
typed on disk). A record whose NFC key is taken (the two forms were added as two mailboxes)
stays where it is and is logged: which one is the real one is the postmaster's call. Two
replicas starting at once both try; the revision checks let one write win.
"""

from __future__ import annotations

import base64
import binascii
import logging

from google.protobuf.message import DecodeError, Message

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core.addresses import normalise_local, split
from mailyard.core.directory import DirectoryView, canonical, record_key
from mailyard.core.errors import BusError
from mailyard.directory.store import Conflict, KVStore

log = logging.getLogger(__name__)

_KINDS: dict[str, type[pb.Mailbox] | type[pb.Alias] | type[pb.MailingList]] = {
    "mailbox": pb.Mailbox, "alias": pb.Alias, "list": pb.MailingList}


def _decoded(part: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None  # written around the directory: not ours to move


def _stale(key: str) -> bool:
    """Is this a record key whose local part is not in the form lookups compute?"""
    kind, _, rest = key.partition(".")
    if kind not in _KINDS:
        return False
    local = _decoded(rest.partition(".")[2])
    return local is not None and not local.isascii() and normalise_local(local) != local


async def renormalise(store: KVStore, view: DirectoryView) -> int:
    """Move every stale record to its NFC key; the number moved."""
    moved = 0
    for key in [k for k in view.data if _stale(k)]:
        try:
            moved += await _move(store, key)
        except Conflict:
            log.info("record moved by another replica meanwhile", extra={"key": key})
        except BusError as exc:  # serve anyway; the next start moves the rest
            log.error("moving directory records to their NFC address stopped: %s", exc)
            break
    return moved


async def _move(store: KVStore, key: str) -> int:
    kind = key.partition(".")[0]
    current = await store.get(key)
    if current.value is None:
        return 0
    try:
        record: Message = _KINDS[kind].FromString(current.value)
    except DecodeError:
        return 0
    old_address: str = record.address  # type: ignore[attr-defined]
    address = canonical(old_address)
    expect = 0
    for other in _KINDS:
        taken = await store.get(record_key(other, address))
        if other == kind:
            expect = taken.revision
        if taken.value is not None:
            log.error("two directory records are one address in NFC; the one typed "
                      "otherwise is left unreachable, delete or rename one",
                      extra={"address": address, "other": old_address, "kind": kind})
            return 0
    if isinstance(record, pb.Mailbox) and not record.maildir:
        local, domain = split(old_address)
        record.maildir = f"{domain}/{local}/Maildir"  # where local-delivery put its mail
    record.address = address  # type: ignore[attr-defined]
    await store.put(record_key(kind, address), record.SerializeToString(), expect=expect)
    await store.delete(key, expect=current.revision)
    log.warning("directory record moved to its NFC address",
                extra={"kind": kind, "address": address})
    return 1
