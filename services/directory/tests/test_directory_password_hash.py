# ruff: noqa: S105, S106  (fixed test passwords and hashes)
"""Mailboxes created or changed with an existing password hash (what `mailyard import qmail`
brings from vpasswd): stored as it is, malformed hashes refused, and the compare-and-swap
UpgradePasswordHash that relay-auth calls after a login."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core import password_hashes
from mailyard.core.directory import DirectoryView

from .conftest import code_of, wait_until

OLD = "old pass 1"
HASHES = {
    "des": "xyEh67oWezXc6",
    "md5": "$1$vpop$ajlltFrlq56XIsFxRqI3M0",
    "sha256": "$5$vpopmail$vvgGtHxY4uVtS0nWjOKABsnBG0j/nMybQh6k2bR6r27",
    "sha512": "$6$vpopmail$n4/pvnWmKWZH0lXl6xUJKQvtZt.CuhJgQ3EkYzCcwCk78mrIl96zsx3Hz029Dd8Lvf"
              "tc.tDRCX9MEwpAhHHLU/",
    "bcrypt": "$2y$05$abcdefghijklmnopqrstuulVPrWkMVFW.Yf6.oevgz5SLvM7Mz/xS",
    "argon2id": "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$PkuDTSV+mxxqGhJri1qThZd6"
                "e8LXaTXU4+trLgZuxSE",
}


async def stored_hash(reader: DirectoryView, address: str, expect: str | None = None) -> str:
    def ready() -> bool:
        box = reader.mailbox(address)
        return box is not None and (expect is None or box.password_hash == expect)

    await wait_until(reader, ready)
    box = reader.mailbox(address)
    assert box is not None
    return box.password_hash


@pytest.mark.parametrize("kind", sorted(HASHES))
async def test_add_mailbox_with_an_existing_hash(example: Any, reader: Any, kind: str) -> None:
    address = f"{kind}@example.com"
    answer = await example.AddMailbox(pb.AddMailboxRequest(address=address,
                                                           password_hash=HASHES[kind]))
    assert answer.password_hash == "*"
    assert await stored_hash(reader, address) == HASHES[kind]


@pytest.mark.parametrize("bad", [
    "secret", "bad$", "$1$vpop$ajlltFrlq56XIsFxRqI3M", "$6$rounds=5$x$" + "a" * 86,
    "$argon2id$v=19$m=9999999,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"])
async def test_a_malformed_hash_is_refused(example: Any, reader: Any, bad: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.AddMailbox(pb.AddMailboxRequest(address="joe@example.com",
                                                      password_hash=bad))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert "password_hash refused" in (exc.value.details() or "")
    assert reader.mailbox("joe@example.com") is None


async def test_hash_and_password_or_cram_together_are_refused(example: Any) -> None:
    for request in (
            pb.AddMailboxRequest(address="joe@example.com", password="a long secret",
                                 password_hash=HASHES["md5"]),
            pb.AddMailboxRequest(address="joe@example.com", password_hash=HASHES["md5"],
                                 enable_cram_md5=True)):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await example.AddMailbox(request)
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT


async def test_set_password_with_a_hash(example: Any, reader: Any) -> None:
    await example.AddMailbox(pb.AddMailboxRequest(address="joe@example.com",
                                                  password="a long secret"))
    await example.SetPassword(pb.SetPasswordRequest(address="joe@example.com",
                                                    password_hash=HASHES["sha512"]))
    assert await stored_hash(reader, "joe@example.com", HASHES["sha512"]) == HASHES["sha512"]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.SetPassword(pb.SetPasswordRequest(address="joe@example.com",
                                                        password_hash="$6$nope"))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.SetPassword(pb.SetPasswordRequest(address="nobody@example.com",
                                                        password_hash=HASHES["md5"]))
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND


async def test_upgrade_is_a_compare_and_swap(example: Any, reader: Any) -> None:
    address = "joe@example.com"
    await example.AddMailbox(pb.AddMailboxRequest(address=address, password_hash=HASHES["md5"],
                                                  quota_bytes=5000))
    new = await asyncio.to_thread(password_hashes.hash_password, OLD)
    await example.UpgradePasswordHash(pb.UpgradePasswordHashRequest(
        address=address, current_hash=HASHES["md5"], new_hash=new))
    assert await stored_hash(reader, address, new) == new
    box = reader.mailbox(address)
    assert box is not None and box.quota_bytes == 5000  # nothing else touched

    # a password set after the login was checked wins over the login's upgrade
    await example.SetPassword(pb.SetPasswordRequest(address=address, password="changed it!"))

    def password_changed() -> bool:  # the reader's watch may not have it yet
        box = reader.mailbox(address)
        return box is not None and box.password_hash != new

    await wait_until(reader, password_changed)
    changed = await stored_hash(reader, address)
    assert changed != new
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.UpgradePasswordHash(pb.UpgradePasswordHashRequest(
            address=address, current_hash=new, new_hash=new))
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
    assert (await stored_hash(reader, address)) == changed


@pytest.mark.parametrize("new", [HASHES["sha512"], HASHES["argon2id"], "junk"])
async def test_upgrade_takes_only_the_platform_hash(example: Any, new: str) -> None:
    await example.AddMailbox(pb.AddMailboxRequest(address="joe@example.com",
                                                  password_hash=HASHES["md5"]))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.UpgradePasswordHash(pb.UpgradePasswordHashRequest(
            address="joe@example.com", current_hash=HASHES["md5"], new_hash=new))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
