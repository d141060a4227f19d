"""mailyard.control.v1.Control over real gRPC; changes seen live by a separate ControlView."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from mailyard.api.control.v1 import control_pb2 as pb
from mailyard.core import bus, control
from mailyard.core.control import ControlView
from mailyard.directory.store import KVStore

from .conftest import Replica, code_of, wait_until


@pytest.fixture
async def reader(js: Any) -> Any:
    view = ControlView()
    await view.start(js)
    yield view
    await view.stop()


async def test_set_get_list_delete(svc: Replica, reader: ControlView) -> None:
    stub = svc.control
    answer = await stub.Set(pb.SetRequest(name="databytes", text="20000000"))
    assert answer.text == "20000000\n"
    assert answer.version == control.version_of("20000000\n")
    assert answer.HasField("updated_at") and answer.updated_at.seconds > 0
    await wait_until(reader, lambda: reader.integer("databytes", 0) == 20000000)
    assert reader.version("databytes") == answer.version

    routes = ":relay.example.net:25\nexample.org:[10.0.0.1]\n"
    await stub.Set(pb.SetRequest(name="smtproutes", text=routes))
    got = await stub.Get(pb.GetRequest(name="smtproutes"))
    assert got.text == routes and got.version == control.version_of(routes)
    await stub.Set(pb.SetRequest(name="badmailfrom", text="anything\n"))

    listed = await stub.List(pb.ListRequest())
    assert [f.name for f in listed.files] == ["badmailfrom", "databytes", "smtproutes"]
    assert all(f.version and f.HasField("updated_at") for f in listed.files)

    deleted = await stub.Delete(pb.GetRequest(name="smtproutes"))
    assert deleted.text == routes
    await wait_until(reader, lambda: "smtproutes" not in reader.data)
    for call in (stub.Get(pb.GetRequest(name="smtproutes")),
                 stub.Delete(pb.GetRequest(name="smtproutes"))):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert code_of(exc) == grpc.StatusCode.NOT_FOUND
    # set again after a delete (the tombstone is the CAS base)
    await stub.Set(pb.SetRequest(name="smtproutes", text=routes))
    assert (await stub.Get(pb.GetRequest(name="smtproutes"))).text == routes


async def test_list_holds_no_texts_so_large_files_never_fail_it(svc: Replica) -> None:
    """Each control file may be a KV message (1 MiB); List answered every file's text, so
    five large ones (a badmailfrom of 200,000 lines, a long rcpthosts, ...) made an answer
    past gRPC's 4 MiB: RESOURCE_EXHAUSTED for `mailyard control list` and any client. It
    answers what the listing shows (name, version, time, size); Get gives a text."""
    text = "".join(f"# line {n:06d} " + "x" * 90 + "\n" for n in range(9000))
    names = ["badmailfrom", "dnsbl", "greylistexempt", "rcpthosts", "smtproutes"]
    for name in names:
        await svc.control.Set(pb.SetRequest(name=name, text=text))
    listed = await svc.control.List(pb.ListRequest(), timeout=30)
    assert [f.name for f in listed.files] == names
    for file in listed.files:
        assert (file.text, file.size) == ("", len(text))
        assert file.version == control.version_of(text) and file.HasField("updated_at")
    assert (await svc.control.Get(pb.GetRequest(name="dnsbl"))).text == text


@pytest.mark.parametrize("name", ["databytes", "queuelifetime", "concurrencyremote",
                                  "concurrencylocal"])
async def test_numeric_files_must_be_positive_integers(svc: Replica, name: str) -> None:
    for bad in ("0", "-5", "ten", "1 2", ""):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await svc.control.Set(pb.SetRequest(name=name, text=bad))
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
        assert f"control/{name} must be one positive integer" in (exc.value.details() or "")
    answer = await svc.control.Set(pb.SetRequest(name=name, text="# comment\n15\n"))
    assert answer.text == "# comment\n15\n"


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a b", ".hidden", "a..b"])
async def test_invalid_names(svc: Replica, name: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await svc.control.Set(pb.SetRequest(name=name, text="x"))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("name", ["databyte", "x-custom_file.v2", "smtproute"])
async def test_unknown_names_are_refused_not_stored(svc: Replica, name: str) -> None:
    """A typo would be stored and read by nobody: the operator thinks it applies."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await svc.control.Set(pb.SetRequest(name=name, text="1\n"))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert f"unknown control file {name!r}; known: " in (exc.value.details() or "")
    assert "databytes" in (exc.value.details() or "")
    assert [f.name for f in (await svc.control.List(pb.ListRequest())).files] == []


@pytest.mark.parametrize(("text", "why"), [
    ("example.com:relay.test\nbad line without colon\n", "line 2: no ':'"),
    ("example.com:relay.test:99999\n", "line 1: not a port"),
    ("# c\n\nexample.com:relay.test tls=sometimes\n", "line 3: tls= must be one of"),
    (":smarthost.test auth=mailer:secret\n", "auth= must be USER:/absolute"),
    ("exa mple.com:relay.test\n", "no ':'"),
    ("ex!ample.com:relay.test\n", "not a domain"),
])
async def test_smtproutes_by_the_grammar_remote_delivery_reads(
        svc: Replica, text: str, why: str) -> None:
    """`control set smtproutes` used to store lines remote-delivery then skipped."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await svc.control.Set(pb.SetRequest(name="smtproutes", text=text))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert why in (exc.value.details() or ""), exc.value.details()
    good = "# routes\n:smarthost.test:587 tls=must auth=m:/run/pw\n.example.org:[::1]:2525\n"
    assert (await svc.control.Set(pb.SetRequest(name="smtproutes", text=good))).text == good


async def test_rcpthosts_lines_are_domains(svc: Replica) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await svc.control.Set(pb.SetRequest(name="rcpthosts", text="example.com\nnot valid\n"))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    await svc.control.Set(pb.SetRequest(name="rcpthosts", text="example.com\n.example.org\n"))


async def test_store_cas_loses_no_increment(js: Any) -> None:
    """Two writers (separate stores, as two replicas) read-modify-write one key."""
    one, two = KVStore(js, bus.KV_CONTROL), KVStore(js, bus.KV_CONTROL)
    await bus.ensure_kv(js, bus.KV_CONTROL)

    def increment(raw: bytes | None) -> bytes:
        return str(int(raw or b"0") + 1).encode()

    await asyncio.gather(*((one if i % 2 else two).change("counter", increment)
                           for i in range(30)))
    assert (await one.get("counter")).value == b"30"


@pytest.mark.parametrize(("name", "bad", "why"), [
    ("me", "localhost", "names this machine only"),
    ("me", "mx", "not fully qualified"),
    ("me", "a.example\nb.example", "exactly one host name"),
    ("me", "10.0.0.1", "not an IP address"),
    ("me", "not valid.example", "not a valid host name"),
    ("postmaster", "postmaster", "not an address"),
    ("postmaster", "pm@mx", "not fully qualified"),
    ("postmaster", "a@b.example\nc@d.example", "exactly one address"),
])
async def test_me_and_postmaster_are_validated(svc: Replica, name: str, bad: str,
                                               why: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await svc.control.Set(pb.SetRequest(name=name, text=bad))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert why in (exc.value.details() or "")


async def test_me_and_postmaster_accepted(svc: Replica) -> None:
    assert (await svc.control.Set(pb.SetRequest(name="me", text="mail.example.net"))).text \
        == "mail.example.net\n"
    for good in ("hostmaster@example.net", "postmaster@localhost"):
        await svc.control.Set(pb.SetRequest(name="postmaster", text=good))


async def test_a_file_larger_than_a_bus_record_is_refused(svc: Replica) -> None:
    """nats-server takes at most max_payload (1 MiB by default) in one message: a larger
    file (a long badmailfrom) is refused by name and size, and nothing is stored."""
    text = "".join(f"spammer{n}@example.com\n" for n in range(60_000))  # ~1.5 MB
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await svc.control.Set(pb.SetRequest(name="badmailfrom", text=text))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    assert "badmailfrom" in (exc.value.details() or "")
    assert [f.name for f in (await svc.control.List(pb.ListRequest())).files] == []


async def test_quota_warning_texts_global_and_per_domain(svc: Replica) -> None:
    """local-delivery reads quotawarn.msg.<domain> before quotawarn.msg (vpopmail's
    domains/DOMAIN/.quotawarn.msg and domains/.quotawarn.msg)."""
    for name in ("quotawarn.msg", "quotawarn.msg.example.org", "quotawarn.msg.xn--bcher-kva.de"):
        await svc.control.Set(pb.SetRequest(name=name, text="Subject: full\n\nClean up.\n"))
    listed = await svc.control.List(pb.ListRequest())
    assert len(listed.files) == 3
    for bad, why in (("quotawarn.msg.Example.org", "not a domain in lower case"),
                     ("quotawarn.msg.-x.org", "not a domain in lower case"),
                     ("quotawarn.msgx", "unknown control file")):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await svc.control.Set(pb.SetRequest(name=bad, text="x"))
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
        assert why in (exc.value.details() or ""), exc.value.details()
