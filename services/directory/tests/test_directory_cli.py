"""The `mailyard` domain/user/alias/forward/catchall/list/control commands against a running
`python -m mailyard.directory` (a child process) on a private nats-server."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.cli.main import main
from mailyard.cli.qmail_import.apply import Applier, Conflicts, Options
from mailyard.cli.qmail_import.plan import AliasPlan, DomainPlan, Plan
from mailyard.core import bus
from mailyard.core.directory import domain_key, record_key
from mailyard.core.natsserver import NatsServer
from mailyard.testing import grpc_service


@pytest.fixture
def directory(nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[str]:
    process, address = grpc_service("mailyard.directory", "DIRECTORY", nats_server.url,
                                    tmp_path / "logs")
    process.start()
    monkeypatch.setenv("MAILYARD_DIRECTORY_ADDR", address)
    yield address
    assert process.stop() == 0, process.logs()


def run(capsys: pytest.CaptureFixture[str], *args: str, stdin: str = "",
        monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    if monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_domain_and_user_commands(directory: str, capsys: Any,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(capsys, "domain", "add", "Example.com")[1] == "added domain example.com\n"
    code, _, err = run(capsys, "domain", "add", "example.com")
    assert code == 1 and "ALREADY_EXISTS" in err
    assert run(capsys, "domain", "list")[1] == "example.com\tcatchall=none\n"

    code, out, _ = run(capsys, "user", "add", "joe@example.com", "--password-stdin",
                       "--quota", "1000", stdin="a long secret\n", monkeypatch=monkeypatch)
    assert (code, out) == (0, "added user joe@example.com\n")
    code, _, err = run(capsys, "user", "add", "ann@example.com", "--password-stdin",
                       stdin="short\n", monkeypatch=monkeypatch)
    assert code == 1 and "INVALID_ARGUMENT" in err and "too short" in err
    code, _, err = run(capsys, "user", "add", "ann@nowhere.org", "--password-stdin",
                       stdin="a long secret\n", monkeypatch=monkeypatch)
    assert code == 1 and "FAILED_PRECONDITION" in err

    # getpass prompt asked twice: a mismatch writes nothing
    answers = iter(["first secret", "other secret"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    code, _, err = run(capsys, "user", "add", "ann@example.com")
    assert code == 1 and "do not match" in err
    answers = iter(["first secret", "first secret"])
    assert run(capsys, "user", "add", "ann@example.com", "--cram-md5")[0] == 0

    assert run(capsys, "user", "quota", "ann@example.com", "5000")[0] == 0
    out = run(capsys, "user", "list", "example.com")[1]
    assert out.splitlines() == [
        "ann@example.com\tquota=5000\tcram-md5=on\tmaildir=example.com/ann/Maildir",
        "joe@example.com\tquota=1000\tmaildir=example.com/joe/Maildir"]
    code, out, _ = run(capsys, "user", "passwd", "joe@example.com", "--password-stdin",
                       stdin="a newer secret\n", monkeypatch=monkeypatch)
    assert (code, out) == (0, "changed password of joe@example.com\n")
    assert run(capsys, "user", "del", "ann@example.com")[0] == 0
    assert "ann@" not in run(capsys, "user", "list")[1]
    code, _, err = run(capsys, "user", "del", "ann@example.com")
    assert code == 1 and "NOT_FOUND" in err
    assert run(capsys, "domain", "del", "example.com")[0] == 0
    assert run(capsys, "domain", "list")[1] == ""


def test_alias_forward_catchall_list_commands(directory: str, capsys: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    run(capsys, "domain", "add", "example.com")
    run(capsys, "user", "add", "joe@example.com", "--password-stdin", stdin="a long secret\n",
        monkeypatch=monkeypatch)
    out = run(capsys, "alias", "add", "info@example.com", "joe@example.com", "x@remote.org")[1]
    assert out == "added alias info@example.com -> joe@example.com,x@remote.org\n"
    assert run(capsys, "alias", "list")[1] == "info@example.com\tjoe@example.com,x@remote.org\n"
    assert run(capsys, "resolve", "info@example.com")[1] == (
        "info@example.com\talias\ttargets=joe@example.com,x@remote.org\n")
    assert run(capsys, "alias", "del", "info@example.com")[0] == 0

    out = run(capsys, "forward", "set", "joe@example.com", "joe@remote.org", "--keep-copy")[1]
    assert "forward=joe@remote.org\tkeep_copy=yes" in out
    assert "forward=" not in run(capsys, "forward", "clear", "joe@example.com")[1]

    assert run(capsys, "catchall", "set", "example.com", "joe@example.com")[1] == (
        "example.com\tcatchall=joe@example.com\n")
    assert run(capsys, "resolve", "who@example.com")[1] == (
        "who@example.com\tcatch_all\tmailbox=joe@example.com\n")
    for word in ("bounce", "delete", "none"):
        assert run(capsys, "catchall", "set", "example.com", word)[1] == (
            f"example.com\tcatchall={word}\n")

    out = run(capsys, "list", "add", "team@example.com", "--owner", "joe@example.com",
              "a@x.org", "b@x.org")[1]
    assert out == "added list team@example.com\towner=joe@example.com\tmembers=a@x.org,b@x.org\n"
    assert run(capsys, "list", "member", "add", "team@example.com", "c@x.org")[1].endswith(
        "members=a@x.org,b@x.org,c@x.org\n")
    assert run(capsys, "list", "member", "del", "team@example.com", "a@x.org")[1].endswith(
        "members=b@x.org,c@x.org\n")
    run(capsys, "list", "add", "empty@example.com", "--owner", "joe@example.com")
    assert run(capsys, "list", "list", "example.com")[1].splitlines() == [
        "empty@example.com\towner=joe@example.com\tmembers=",
        "team@example.com\towner=joe@example.com\tmembers=b@x.org,c@x.org"]
    # who may post: an open list's line is as it was
    assert run(capsys, "list", "add", "news@example.com", "--owner", "joe@example.com",
               "--posting", "members", "--poster", "ed@x.org", "a@x.org")[1] == (
        "added list news@example.com\towner=joe@example.com\tposting=members\tposters=ed@x.org"
        "\tmembers=a@x.org\n")
    assert run(capsys, "list", "set", "news@example.com", "--posting", "announce")[1] == (
        "news@example.com\tposting=announce\n")
    with pytest.raises(SystemExit):  # argparse's one line: invalid choice
        run(capsys, "list", "set", "news@example.com", "--posting", "moderated")
    run(capsys, "list", "del", "news@example.com")
    code, out, err = run(capsys, "list", "show", "Team@Example.com")
    assert (code, out) == (0, "b@x.org\nc@x.org\n")
    assert "owner=joe@example.com members=2" in err
    code, out, err = run(capsys, "list", "show", "nobody@example.com")
    assert (code, out) == (1, "") and "NOT_FOUND" in err and "no list" in err
    code, _, err = run(capsys, "list", "list", "nowhere.org")
    assert code == 1 and "NOT_FOUND" in err
    assert run(capsys, "list", "del", "team@example.com")[0] == 0
    assert run(capsys, "resolve", "team@example.com")[1] == "team@example.com\tunknown\n"


def test_list_subscription_by_mail(directory: str, capsys: Any) -> None:
    """No command could let a list take subscriptions by mail; `list subscription` and
    `list add --subscription` do, and the listing says which lists do (a closed list's
    line is as it was)."""
    run(capsys, "domain", "add", "example.com")
    assert run(capsys, "list", "add", "news@example.com", "--owner", "joe@example.com",
               "--subscription", "confirm")[1] == (
        "added list news@example.com\towner=joe@example.com\tsubscription=confirm"
        "\tmembers=\n")
    run(capsys, "list", "add", "team@example.com", "--owner", "joe@example.com")
    assert run(capsys, "list", "subscription", "team@example.com", "confirm")[1] == (
        "team@example.com\tsubscription=confirm\n")
    assert run(capsys, "list", "subscription", "news@example.com", "closed")[1] == (
        "news@example.com\tsubscription=closed\n")
    assert run(capsys, "list", "list", "example.com")[1].splitlines() == [
        "news@example.com\towner=joe@example.com\tmembers=",
        "team@example.com\towner=joe@example.com\tsubscription=confirm\tmembers="]
    _, _, err = run(capsys, "list", "show", "team@example.com")
    assert "subscription=confirm" in err
    with pytest.raises(SystemExit):
        run(capsys, "list", "subscription", "team@example.com", "moderated")
    code, _, err = run(capsys, "list", "subscription", "none@example.com", "confirm")
    assert code == 1 and "NOT_FOUND" in err


def test_control_commands(directory: str, capsys: Any, monkeypatch: pytest.MonkeyPatch
                          ) -> None:
    assert run(capsys, "control", "set", "databytes", "20000000")[0] == 0
    assert run(capsys, "control", "get", "databytes")[1] == "20000000\n"
    code, _, err = run(capsys, "control", "set", "concurrencyremote", "0")
    assert code == 1 and "INVALID_ARGUMENT" in err and "positive integer" in err
    assert run(capsys, "control", "set", "rcpthosts", "a.example", "b.example")[0] == 0
    assert run(capsys, "control", "get", "rcpthosts")[1] == "a.example\nb.example\n"
    routes = ":relay.example.net:25\n"
    assert run(capsys, "control", "set", "smtproutes", stdin=routes,
               monkeypatch=monkeypatch)[0] == 0
    assert run(capsys, "control", "get", "smtproutes")[1] == routes
    lines = run(capsys, "control", "list")[1].splitlines()
    assert [line.split("\t")[0] for line in lines] == ["databytes", "rcpthosts", "smtproutes"]
    assert run(capsys, "control", "del", "rcpthosts")[1] == "deleted rcpthosts\n"
    code, _, err = run(capsys, "control", "get", "rcpthosts")
    assert code == 1 and "NOT_FOUND" in err


async def test_user_add_password_stdin_in_a_real_pipe(directory: str, js: Any) -> None:
    """The real `mailyard` process, password on a pipe; the hash lands in KV."""
    env = {**os.environ, "MAILYARD_DIRECTORY_ADDR": directory}

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailyard.cli.main", *args], input=stdin,
                              capture_output=True, text=True, env=env, timeout=60, check=False)

    assert cli("domain", "add", "example.com").returncode == 0
    done = cli("user", "add", "joe@example.com", "--password-stdin", stdin="piped secret\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "added user joe@example.com\n"
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    mailbox = pb.Mailbox.FromString((await kv.get(record_key("mailbox", "joe@example.com"))
                                     ).value)
    assert PasswordHasher().verify(mailbox.password_hash, "piped secret")

    # an existing hash (vpasswd's MD5-crypt), then one from stdin; a bad one is one line
    md5 = "$1$vpop$ajlltFrlq56XIsFxRqI3M0"
    done = cli("user", "add", "ann@example.com", "--password-hash", md5)
    assert (done.returncode, done.stdout) == (0, "added user ann@example.com\n"), done.stderr
    sha = ("$6$vpopmail$n4/pvnWmKWZH0lXl6xUJKQvtZt.CuhJgQ3EkYzCcwCk78mrIl96zsx3Hz029Dd8Lvftc."
           "tDRCX9MEwpAhHHLU/")
    done = cli("user", "passwd", "joe@example.com", "--password-hash", "-", stdin=sha + "\n")
    assert done.returncode == 0, done.stderr
    for address, expected in (("ann@example.com", md5), ("joe@example.com", sha)):
        entry = await kv.get(record_key("mailbox", address))
        assert pb.Mailbox.FromString(entry.value).password_hash == expected
    done = cli("user", "add", "bob@example.com", "--password-hash", "$1$broken")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "password_hash refused" in done.stderr
    done = cli("user", "add", "bob@example.com", "--password-hash", md5, "--password-stdin")
    assert done.returncode == 2 and "not allowed with" in done.stderr


def test_listings_past_one_page(directory: str, nats_server: NatsServer, capsys: Any,
                                tmp_path: Path) -> None:
    """The listings come in pages of at most 1,000: each command follows them to the end,
    every record once, in the service's order."""
    domains = [f"d{n:04d}.example" for n in range(1200)]
    mailboxes = [f"user{n}@d0000.example" for n in range(2500)]
    aliases = [f"alias{n}@d0001.example" for n in range(1100)]
    lists = [f"list{n}@d0002.example" for n in range(1100)]
    records = {domain_key(d): pb.Domain(name=d) for d in domains}
    records.update({record_key("mailbox", a): pb.Mailbox(address=a) for a in mailboxes})
    records.update({record_key("alias", a): pb.Alias(address=a, targets=["x@y.org"])
                    for a in aliases})
    records.update({record_key("list", a): pb.MailingList(address=a, owner="o@y.org")
                    for a in lists})
    asyncio.run(_put_all(nats_server.url, records))
    # a write of its own: the service's view has then caught up with the records above
    assert run(capsys, "domain", "add", "zz.example")[0] == 0

    code, out, err = run(capsys, "user", "list")
    assert code == 0, err
    assert [line.split("\t")[0] for line in out.splitlines()] == sorted(
        mailboxes, key=lambda a: record_key("mailbox", a))
    out = run(capsys, "domain", "list")[1]
    assert [line.split("\t")[0] for line in out.splitlines()] == [*domains, "zz.example"]
    out = run(capsys, "alias", "list", "d0001.example")[1]
    assert sorted(line.split("\t")[0] for line in out.splitlines()) == sorted(aliases)
    out = run(capsys, "list", "list")[1]
    assert len(out.splitlines()) == len(lists)

    # `import qmail` reads what the platform has the same way, before its first write: a
    # mailbox past the first page that the old host has as an alias is a conflict
    plan = Plan(domains=[DomainPlan("d0000.example")],
                aliases=[AliasPlan("user2400@d0000.example", ["x@y.org"], "valias:7")])
    with pytest.raises(Conflicts) as conflicts:
        Applier(plan, Options(mail_dir=tmp_path)).read_platform()
    assert "user2400@d0000.example is mailbox on the platform" in str(
        conflicts.value.problems.items)


async def _put_all(nats_url: str, records: dict[str, Any]) -> None:
    """What the directory writes, straight into the bucket (thousands in a second)."""
    nc = await bus.connect(nats_url, "test")
    kv = await bus.ensure_kv(nc.jetstream(), bus.KV_DIRECTORY)
    items = list(records.items())
    for start in range(0, len(items), 500):
        await asyncio.gather(*(kv.put(k, v.SerializeToString())
                               for k, v in items[start:start + 500]))
    await nc.close()


def test_resolve_names_the_record_that_answered(directory: str, capsys: Any) -> None:
    """Through an alias domain or an extension, `resolve` says whose records answered: it
    printed only the address asked and the kind, so team+x@alias.test looked like a list
    of its own."""
    run(capsys, "domain", "add", "example.com")
    assert run(capsys, "domain", "add", "alias.test", "--alias-of", "example.com")[1] == (
        "added domain alias.test, an alias domain of example.com\n")
    run(capsys, "list", "add", "team@example.com", "--owner", "joe@example.com", "a@x.org")
    assert run(capsys, "resolve", "team@alias.test")[1] == (
        "team@alias.test\tlist\tas=team@example.com\ttargets=a@x.org\n")
    # a list's extension is a command address, never the list: -owner is its owner
    assert run(capsys, "resolve", "team+x@alias.test")[1] == (
        "team+x@alias.test\tlist_command\tas=team@example.com\n")
    assert run(capsys, "resolve", "team+owner@alias.test")[1] == (
        "team+owner@alias.test\talias\tas=team@example.com\ttargets=joe@example.com\n")
    assert run(capsys, "resolve", "team@example.com")[1] == (
        "team@example.com\tlist\ttargets=a@x.org\n")
    code, _, err = run(capsys, "domain", "del", "example.com")
    assert code == 1 and "--with-aliases" in err
    assert run(capsys, "domain", "del", "example.com", "--with-aliases")[0] == 0
    assert run(capsys, "domain", "list")[1] == ""
