"""`mailyard route list|set|del|explain` against a running directory (Control, where
smtproutes is written) and remote-delivery (Routing.Explain, which reads it through the KV
watch): real child processes, a real nats-server and an SMTP server on 127.0.0.1."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailyard.cli.main import main
from mailyard.core.natsserver import NatsServer, free_port
from mailyard.testing import ServiceProcess, SmtpSink, grpc_service


@dataclass
class Services:
    directory: ServiceProcess
    remote: ServiceProcess


def closed_port() -> int:
    return free_port()  # nothing listens there: DNS to it fails at once, as a temporary error


@pytest.fixture
def services(nats_server: NatsServer, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    directory, directory_addr = grpc_service("mailyard.directory", "DIRECTORY", nats_server.url,
                                             tmp_path / "logs")
    directory.start()
    remote, remote_addr = grpc_service(
        "mailyard.remote_delivery", "REMOTE", nats_server.url, tmp_path / "logs",
        spool_dir=str(tmp_path / "spool"), me="mx.ours.test",
        dns_server=f"127.0.0.1:{closed_port()}", dns_timeout="2")
    (tmp_path / "spool" / "mess").mkdir(parents=True)
    remote.start()
    monkeypatch.setenv("MAILYARD_DIRECTORY_ADDR", directory_addr)
    monkeypatch.setenv("MAILYARD_REMOTE_ADDR", remote_addr)
    yield Services(directory, remote)
    assert remote.stop() == 0, remote.logs()
    assert directory.stop() == 0, directory.logs()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def explain_until(capsys: pytest.CaptureFixture[str], wanted: str,
                  *argv: str) -> tuple[int, str]:
    """remote-delivery sees a change through its KV watch: ask until it does."""
    deadline = time.monotonic() + 20
    while True:
        code, out, _ = run(capsys, "route", "explain", *argv)
        if wanted in out or time.monotonic() > deadline:
            return code, out
        time.sleep(0.05)


def test_set_list_explain_and_del(services: Services, smtp_sink: SmtpSink,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "route", "list") == (0, "", "")

    code, out, _ = run(capsys, "route", "set", "example.test", "[127.0.0.1]:1", "--tls", "none")
    assert code == 0
    assert out.splitlines()[0].startswith("smtproutes version ")
    assert out.splitlines()[1] == "example.test:[127.0.0.1]:1 tls=none"
    assert run(capsys, "route", "set", ".example.test", "relay.example.net:2525")[0] == 0
    code, out, _ = run(capsys, "route", "set", ":", "smarthost.example.net:587", "--tls", "must",
                       "--auth", "mailer:/run/secrets/smarthost", "--remote-file")
    assert code == 0 and out.splitlines()[1] == (
        ":smarthost.example.net:587 tls=must auth=mailer:/run/secrets/smarthost")
    # the same key again replaces its line, in place
    code, out, _ = run(capsys, "route", "set", "Example.TEST.", f"127.0.0.1:{smtp_sink.port}")
    assert code == 0 and out.splitlines()[1] == f"example.test:127.0.0.1:{smtp_sink.port}"
    code, out, _ = run(capsys, "route", "list")
    assert code == 0 and out.splitlines() == [
        f"example.test:127.0.0.1:{smtp_sink.port}",
        ".example.test:relay.example.net:2525",
        ":smarthost.example.net:587 tls=must auth=mailer:/run/secrets/smarthost"]

    # remote-delivery routes by what was written, and the probe reaches the sink
    wanted = f"route:  smtproutes (example.test:127.0.0.1:{smtp_sink.port})"
    code, out = explain_until(capsys, wanted, "User@Example.test", "--probe")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[:3] == ["domain: example.test", wanted,
                         f"1. 127.0.0.1 (preference 0) port {smtp_sink.port}: 127.0.0.1"]
    assert lines[3].startswith("   answers in ") and "127.0.0.1: 220" in lines[3]

    # the default route's host cannot be resolved (DNS is down): a temporary error, exit 1
    code, out, _ = run(capsys, "route", "explain", "someone@elsewhere.test")
    assert code == 1
    assert out.splitlines() == [
        "domain: elsewhere.test",
        "route:  smtproutes (:smarthost.example.net:587 tls=must "
        "auth=mailer:/run/secrets/smarthost)",
        "error:  Sorry, I couldn't find any host by that name. (#4.1.2) [temporary]"]

    code, out, _ = run(capsys, "route", "del", ":")
    assert code == 0 and out.startswith("smtproutes version ")
    code, out, _ = run(capsys, "route", "del", "nothing.test")
    assert (code, out) == (1, "mailyard: no route for 'nothing.test'\n")
    assert run(capsys, "route", "list")[1].splitlines() == [
        f"example.test:127.0.0.1:{smtp_sink.port}", ".example.test:relay.example.net:2525"]
    code, out = explain_until(capsys, "route:  mx", "someone@elsewhere.test")
    assert code == 1 and "route:  mx" in out and "[temporary]" in out
    # the name the world resolves (IDNA 2008), not strasse.test (IDNA 2003: another domain)
    code, out, _ = run(capsys, "route", "explain", "someone@Straße.test")
    assert out.splitlines()[:2] == ["domain: xn--strae-oqa.test", "route:  mx"]
    # every line the CLI wrote is one remote-delivery can use
    assert "skipping line" not in services.remote.logs()


MALFORMED = [
    (("example.test", "relay.example.net:99999"), "not a port (1-65535): '99999'"),
    (("example.test", "relay.example.net:"), "empty port"),
    (("example.test", "relay example.net"), "not a host name: 'relay example.net'"),
    (("example.test", "[relay.example.net]:25"), "not an IP address in brackets"),
    (("example.test", "[127.0.0.1"), "missing ']'"),
    (("exa_mple..test", "relay.example.net"), "not a domain: 'exa_mple..test'"),
]


def test_malformed_routes_are_refused(services: Services,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    for argv, why in MALFORMED:
        code, out, err = run(capsys, "route", "set", *argv)
        assert (code, out) == (2, ""), argv
        assert err.startswith("mailyard: bad route: ") and why in err, err
    assert run(capsys, "route", "list") == (0, "", "")  # nothing was written


def test_other_bad_input(services: Services, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(capsys, "route", "set", "example.test", "relay.test", "--auth",
                         "mailer:secrets/pw")
    assert (code, out) == (2, "") and "--auth takes USER:/absolute/path" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["route", "set", "example.test", "relay.test", "--tls", "sometimes"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err
    code, out, err = run(capsys, "route", "explain", "")
    assert (code, out) == (1, "") and "INVALID_ARGUMENT" in err and "address" in err
    assert run(capsys, "route", "list") == (0, "", "")
    monkeypatch.setenv("MAILYARD_DIRECTORY_ADDR", f"127.0.0.1:{closed_port()}")
    code, out, err = run(capsys, "route", "list")
    assert (code, out) == (1, "") and "service unavailable" in err


def test_control_set_refuses_typos_and_bad_routes(services: Services,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(capsys, "control", "set", "databyte", "20000000")
    assert (code, out) == (1, "")
    assert err.startswith("mailyard: INVALID_ARGUMENT: unknown control file 'databyte'")
    assert err.count("\n") == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("example.test:relay.example.net:99999\n"))
    code, out, err = run(capsys, "control", "set", "smtproutes")
    assert (code, out) == (1, "") and "line 1: not a port (1-65535): '99999'" in err
    assert run(capsys, "route", "list") == (0, "", "")  # nothing was written


def test_local_domain_unreadable_auth_file_and_silent_probe(
        services: Services, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # a hosted domain is delivered locally, whatever DNS says
    assert run(capsys, "domain", "add", "hosted.test")[0] == 0
    code, out, _ = run(capsys, "route", "explain", "nobody@Hosted.test")
    assert code == 0 and out.splitlines() == [
        "domain: hosted.test", "route:  local (a hosted domain: local-delivery, never MX)",
        "        no such user here (refused at RCPT with 550 5.1.1)"]
    # a password file that is not there is refused (unless it lives on remote-delivery)
    code, out, err = run(capsys, "route", "set", "x.test", "relay.test", "--auth",
                         f"mailer:{tmp_path}/missing")
    assert (code, out) == (2, "") and "cannot read" in err and "--remote-file" in err
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert run(capsys, "route", "set", "x.test", "relay.test", "--auth",
               f"mailer:{secret}")[0] == 0
    # --probe with nobody listening: exit 1
    port = closed_port()
    assert run(capsys, "route", "set", "quiet.test", f"[127.0.0.1]:{port}")[0] == 0
    wanted = f"route:  smtproutes (quiet.test:[127.0.0.1]:{port})"
    code, out = explain_until(capsys, wanted, "a@quiet.test", "--probe")
    assert code == 1 and "does NOT answer" in out
    # the same over remote-delivery's HTTP API
    base = f"http://127.0.0.1:{services.remote.http_port}/api/routes"
    with urllib.request.urlopen(f"{base}/explain?address=a@quiet.test&probe=true") as resp:  # noqa: S310
        body = json.load(resp)
    assert body["source"] == "smtproutes" and body["hops"][0]["answers"] is False
    with urllib.request.urlopen(base) as resp:
        assert f"quiet.test:[127.0.0.1]:{port}" in json.load(resp)["routes"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/explain?address=")  # noqa: S310
    assert err.value.code == 400


def test_explain_says_which_list_addresses_are_taken(
        services: Services, capsys: pytest.CaptureFixture[str]) -> None:
    """`route explain` said every command address of a list was "refused at RCPT with 550
    5.7.1", also the subscribe addresses of a list that takes subscriptions by mail and its
    -return address, which smtp-ingress takes; it says what becomes of each now."""
    assert run(capsys, "domain", "add", "hosted.test")[0] == 0
    assert run(capsys, "list", "add", "news@hosted.test", "--owner", "o@hosted.test",
               "m@else.test", "--subscription", "confirm")[0] == 0
    assert run(capsys, "list", "add", "quiet@hosted.test", "--owner", "o@hosted.test",
               "m@else.test")[0] == 0
    said = {}
    for address in ("news+subscribe@hosted.test", "news+return@hosted.test",
                    "news+help@hosted.test", "quiet+subscribe@hosted.test",
                    "quiet+return@hosted.test", "quiet+return-12-m=else.test@hosted.test"):
        code, out, _ = run(capsys, "route", "explain", address)
        assert code == 0
        said[address] = out.splitlines()[-1].strip()
    assert said["news+subscribe@hosted.test"] == (
        "subscription command of the list news@hosted.test (subscription=confirm): "
        "a confirmation request or the change, by local-delivery")
    for name in ("news", "quiet"):
        assert said[f"{name}+return@hosted.test"] == (
            f"return address of the list {name}@hosted.test: taken and dropped "
            "(its confirmation requests bounce here)")
    assert said["quiet+return-12-m=else.test@hosted.test"] == said["quiet+return@hosted.test"]
    for address in ("news+help@hosted.test", "quiet+subscribe@hosted.test"):
        assert said[address].endswith("(refused at RCPT with 550 5.7.1)"), address
