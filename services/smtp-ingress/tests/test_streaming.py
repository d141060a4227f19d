"""DATA is streamed: past DATA_MEMORY a message goes into a spill file on the spool as it
arrives (an unnamed O_TMPFILE, visible only as an open descriptor), never held whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ingress_helpers import (
    MakeIngress,
    committed,
    lines_hold,
    put_control,
    seed_directory,
    session,
    wait_for,
)

from mailyard.core.spool import Spool
from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.server import Ingress


def _spill_files(ingress: Ingress) -> int:
    """Our open descriptors on unnamed files in the spool's tmp/."""
    tmp = str(Path(ingress.settings.spool_dir).resolve() / "tmp")
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(tmp) and target.endswith("(deleted)"):
            count += 1
    return count


async def _streaming(make_ingress: MakeIngress, js: Any) -> Ingress:
    ingress = await make_ingress(data_memory=65536)
    await seed_directory(js, "example.org", ["alice@example.org"])
    await wait_for(lambda: ingress.directory.accepts("alice@example.org"))
    return ingress


async def test_large_message_streams_to_a_spill_file(make_ingress: MakeIngress,
                                                     js: Any) -> None:
    ingress = await _streaming(make_ingress, js)
    client = await session(ingress.ports["smtp"])
    for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>"):
        assert (await client.cmd(line)).startswith("250")
    assert await client.cmd("DATA") == R.GO_AHEAD
    lines = [b"Subject: big\r\n", b"\r\n"]
    lines += [b"..stuffed %d\r\n" % i if i % 7 == 0 else b"line %06d " % i + b"z" * 60 + b"\r\n"
              for i in range(30000)]  # about 2 MB
    wire = b"".join(lines)
    half = len(wire) // 2
    await client.send(wire[:half])
    await wait_for(lambda: _spill_files(ingress) == 1)  # on disk before the end of DATA
    await client.send(wire[half:] + b".\r\nQUIT\r\n")
    reply = await client.reply()
    assert reply.startswith("250 ok ")
    assert await client.reply() == R.quit_reply("mx.test")
    (path,) = committed(ingress)
    envelope, data = Spool(ingress.settings.spool_dir).read_sync(path)  # checksum verified
    expected = wire.replace(b"\r\n..", b"\r\n.")
    assert data.endswith(b"\r\n" + expected) and data.startswith(b"Received: ")
    assert envelope.size == len(data)
    assert lines_hold(envelope, data) == (envelope.lines.longest, True)  # exact
    await wait_for(lambda: _spill_files(ingress) == 0)


async def test_over_databytes_stops_writing_and_leaves_nothing(make_ingress: MakeIngress,
                                                               js: Any) -> None:
    ingress = await _streaming(make_ingress, js)
    await put_control(js, "databytes", "500000\n")
    await wait_for(lambda: ingress.databytes() == 500000)
    client = await session(ingress.ports["smtp"])
    for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>", "DATA"):
        await client.cmd(line)
    await client.send((b"y" * 98 + b"\r\n") * 10000 + b".\r\n")  # 1 MB
    assert await client.reply() == R.DATABYTES
    assert _spill_files(ingress) == 0
    assert await client.cmd("NOOP") == R.OK
    assert committed(ingress) == []


async def test_header_edits_of_a_spilled_message(tmp_path: Path) -> None:
    """Two checks rewriting the header (A-R stripping, a subject tag) of a message that
    went to a spill file: both edits reach what is committed; the body is not touched."""
    from mailyard.api.mail.v1.envelope_pb2 import Envelope
    from mailyard.core.ids import new_queue_id
    from mailyard.smtp_ingress.message_body import Budget, MessageBody

    spool = Spool(tmp_path / "spool")
    spool.ensure()
    body = MessageBody(spool, limit=0, memory=1024, budget=Budget(1 << 20))
    message = b"Subject: hi\r\nX-Old: 1\r\n\r\n" + b"body line\r\n" * 500
    for at in range(0, len(message), 700):
        await body.add(message[at:at + 700])
    await body.finish()
    assert body.tail is not None
    body.edit_header(lambda h: h.replace(b"X-Old: 1\r\n", b""))
    body.edit_header(lambda h: h.replace(b"Subject: hi", b"Subject: [SPAM] hi"))
    expected = b"Subject: [SPAM] hi\r\n\r\n" + b"body line\r\n" * 500
    assert await body.whole() == expected and body.head.startswith(b"Subject: [SPAM]")
    stored = await spool.commit(Envelope(queue_id=new_queue_id()), body.in_memory(), body.tail)
    body.close()
    assert (await spool.read(stored.spool_path))[1] == expected
    spool.close()


async def test_header_edits_of_a_message_in_memory(tmp_path: Path) -> None:
    """In memory as well, a check is handed the header section only: one that changes
    nothing costs no copy of the message (its pieces stay as they came); edits reach what
    is committed, the body untouched."""
    from mailyard.smtp_ingress.message_body import Budget, MessageBody

    spool = Spool(tmp_path / "spool")
    spool.ensure()
    body = MessageBody(spool, limit=0, memory=1 << 20, budget=Budget(1 << 20))
    message = b"Subject: hi\r\nX-Old: 1\r\n\r\n" + b"body line\r\n" * 500
    for at in range(0, len(message), 700):
        await body.add(message[at:at + 700])
    await body.finish()
    pieces = list(body._parts)
    seen: list[bytes] = []
    body.edit_header(lambda h: seen.append(h) or h)
    assert seen == [b"Subject: hi\r\nX-Old: 1\r\n\r\n"] and not body.edited
    assert all(a is b for a, b in zip(body._parts, pieces, strict=True))
    body.edit_header(lambda h: h.replace(b"X-Old: 1\r\n", b""))
    body.edit_header(lambda h: h.replace(b"Subject: hi", b"Subject: [SPAM] hi"))
    expected = b"Subject: [SPAM] hi\r\n\r\n" + b"body line\r\n" * 500
    assert body.edited and body.in_memory() == expected
    assert body.head == expected[:len(body.head)] and body.header() == expected[:22]
    body.close()
    spool.close()


async def test_what_messages_hold_together_is_bounded(tmp_path: Path) -> None:
    """DATA_MEMORY_TOTAL: under it a message stays in memory up to DATA_MEMORY; past it,
    every message spills once it holds HEAD bytes. Whatever ends a message (commit, refusal,
    databytes, a spill) gives its bytes back."""
    from mailyard.smtp_ingress.message_body import HEAD, Budget, MessageBody

    spool = Spool(tmp_path / "spool")
    spool.ensure()
    budget = Budget(3 * HEAD)
    piece = b"x" * (HEAD // 2 - 2) + b"\r\n"
    bodies = [MessageBody(spool, limit=0, memory=8 * HEAD, budget=budget) for _ in range(3)]
    for body in bodies:  # 3 x HEAD: at the bound, not past it
        for _ in range(2):
            await body.add(piece)
    assert budget.held == 6 * len(piece) and all(b.tail is None for b in bodies)
    await bodies[0].add(piece)   # past the total, and it holds HEAD: out it goes
    assert bodies[0].tail is not None and budget.held == 4 * len(piece)
    small = MessageBody(spool, limit=0, memory=8 * HEAD, budget=budget)
    await small.add(b"short\r\n")  # past the total still, but under HEAD: kept
    assert small.tail is None
    over = MessageBody(spool, limit=len(piece), memory=8 * HEAD, budget=budget)
    await over.add(piece)
    await over.add(piece)        # past databytes: dropped, and its bytes given back
    assert over.over
    for body in [*bodies, small, over]:
        body.close()
    assert budget.held == 0
    spool.close()


async def test_messages_end_to_end_give_their_memory_back(make_ingress: MakeIngress,
                                                          js: Any) -> None:
    """Accepted, refused (a NUL) and spilled messages through a session: none of them
    leaves bytes counted against the process's total."""
    ingress = await make_ingress(data_memory=65536)
    await seed_directory(js, "example.org", ["alice@example.org"])
    await wait_for(lambda: ingress.directory.accepts("alice@example.org"))
    client = await session(ingress.ports["smtp"])
    for body, code in ((b"Subject: a\r\n\r\nsmall\r\n", "250"),
                       (b"Subject: b\r\n\r\n" + (b"y" * 70 + b"\r\n") * 3000, "250"),
                       (b"Subject: c\r\n\r\nnul\x00\r\n", "554")):
        for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>"):
            assert (await client.cmd(line)).startswith("250")
        assert await client.cmd("DATA") == R.GO_AHEAD
        await client.send(body + b".\r\n")
        assert (await client.reply()).startswith(code)
        assert ingress.data_budget.held == 0
    await client.close()
