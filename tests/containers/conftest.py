"""The platform from its images, as a user runs it: docker-compose.yml under podman-compose
(3 NATS nodes, two smtp-ingress, queue, two remote-delivery, local-delivery, relay-auth,
directory), plus a next-hop SMTP sink container on the same network. `make test-containers`
builds the images (`make image`) and runs this; `make test` does not collect it.

Only image names and secrets come from here; the compose file is the published one."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UP = ["nats-1", "nats-2", "nats-3", "directory", "relay-auth", "queue", "smtp-ingress",
      "smtp-ingress-2", "remote-delivery", "local-delivery"]
INGRESS_PORTS = (2525, 2526)  # the two smtp-ingress containers, as published on 127.0.0.1


def _images() -> dict[str, str]:
    names = ("MAILYARD_IMAGE", "MAILYARD_NATS_IMAGE", "MAILYARD_DOVECOT_IMAGE")
    found = {k: os.environ[k] for k in names if k in os.environ}
    env_file = ROOT / ".images.env"
    if len(found) < len(names) and env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            found.setdefault(key, value)
    if not set(names) <= found.keys():
        pytest.fail("no images: run `make image` first (make test-containers does)")
    return found


class Platform:
    def __init__(self, project: str, workdir: Path) -> None:
        self.project = project
        self.workdir = workdir
        self.out = workdir / "sink"
        self.sink_ip = ""
        self.env = {**os.environ, **_images(),
                    "CONTAINERS_CONF": str(ROOT / "deploy/podman/containers.conf"),
                    "MAILYARD_TLS_CERT_FILE": str(workdir / "cert.pem"),
                    "MAILYARD_TLS_KEY_FILE": str(workdir / "key.pem"),
                    "MAILYARD_GRAFANA_PASSWORD_FILE": str(workdir / "grafana-password"),
                    "MAILYARD_TOKENS_FILE": str(workdir / "tokens")}
        compose = Path(sys.executable).parent / "podman-compose"
        self.compose = [str(compose), "-p", project, "-f", str(ROOT / "docker-compose.yml")]

    def run(self, *args: str, check: bool = True, timeout: float = 300,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              timeout=timeout, input=stdin, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} -> {proc.returncode}\n"
                                 f"{_errors(proc.stdout + proc.stderr)}")
        return proc

    def podman(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run("podman", *args, **kw)  # type: ignore[arg-type]

    def containers(self, service: str | None = None) -> list[str]:
        filters = ["--filter", f"label=io.podman.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=io.podman.compose.service={service}"]
        out = self.podman("ps", "-a", *filters, "--format", "{{.Names}}").stdout
        return sorted(out.split())

    def healthy(self, name: str) -> bool:
        """The compose file's own health check (the service's /readyz), run now: podman
        without systemd runs no health-check timers."""
        return self.podman("healthcheck", "run", name, check=False, timeout=30).returncode == 0

    def wait_healthy(self, names: list[str], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(names)
        while waiting and time.monotonic() < deadline:
            waiting = [n for n in waiting if not self.healthy(n)]
            if waiting:
                time.sleep(1)
        assert not waiting, f"not ready after {timeout}s: {waiting}"

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        """The admin CLI inside the directory container (the admin plane is not published).
        Retried until it works: right after start, JetStream may still elect stream leaders."""
        (directory,) = self.containers("directory")
        deadline = time.monotonic() + timeout
        while True:
            proc = self.podman("exec", "-i", "-e", "MAILYARD_DIRECTORY_ADDR=127.0.0.1:50051",
                               "-e", "MAILYARD_TOKEN_FILE=/run/secrets/mailyard_tokens",
                               "-e", "MAILYARD_QUEUE_ADDR=queue:50051",
                               "-e", "MAILYARD_RELAYAUTH_ADDR=relay-auth:50051", directory,
                               "mailyard", *args, check=False, stdin=stdin)
            if proc.returncode == 0:
                return proc.stdout
            if time.monotonic() > deadline:
                raise AssertionError(f"mailyard {' '.join(args)}: {proc.stdout}{proc.stderr}")
            time.sleep(1)

    def send(self, port: int, rcpt: str, token: str) -> tuple[int, bytes]:
        body = (f"From: a@client.test\r\nTo: {rcpt}\r\nSubject: {token}\r\n\r\n"
                f"body of {token}\r\n").encode()
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail("a@client.test")
            code, reply = client.rcpt(rcpt)
            if code != 250:
                return code, reply
            return client.data(body)

    def sink_tokens(self) -> set[str]:
        tokens = set()
        for path in self.out.glob("*.eml"):
            for line in path.read_bytes().splitlines():
                if line.startswith(b"Subject: "):
                    tokens.add(line[9:].decode())
        return tokens

    def logs(self) -> str:
        parts = []
        for name in self.containers():
            out = self.podman("logs", "--tail", "40", name, check=False)
            parts.append(f"--- {name}\n{out.stdout[-4000:]}{out.stderr[-4000:]}")
        return "\n".join(parts)


# podman 4.3 without systemd says these on every start; they hide the line that matters
_NOISE = ("unable to get systemd connection", "doesn't support healthy")


def _errors(output: str) -> str:
    """The lines of a failed command's output that say what failed (podman-compose prints a
    long run of container ids and warnings first), then its tail."""
    lines = [line for line in output.splitlines() if not any(n in line for n in _NOISE)]
    said = [line for line in lines if "rror" in line or "exit code" in line]
    return "\n".join([*said[-20:], "...", *lines[-15:]])[-4000:]


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    if not shutil.which("podman"):
        pytest.fail("podman is not installed (apt-get install podman runc); .ci/run installs it")
    import trustme

    workdir = tmp_path_factory.mktemp("containers")
    ca = trustme.CA()
    cert = ca.issue_cert("mail.localhost")
    cert.private_key_pem.write_to_path(str(workdir / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(workdir / "cert.pem"))
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))  # clients verify the TLS services
    for pem in ("key.pem", "cert.pem"):  # read by uid 10001 inside the container
        (workdir / pem).chmod(0o644)
    (workdir / "grafana-password").write_text("not-started-here\n")
    # the admin plane's token table, made as the compose file tells a user to make it
    tokens = subprocess.run([sys.executable, "-m", "mailyard.cli.main", "auth", "tokens"],
                            capture_output=True, text=True, check=True).stdout
    (workdir / "tokens").write_text(tokens)
    (workdir / "tokens").chmod(0o644)  # a test's own secret, read by uid 10001 inside
    p = Platform(f"mailyard-ci-{os.getpid()}", workdir)
    p.out.mkdir()
    p.out.chmod(0o777)  # the sink writes as the image's uid 10001
    p.run(*p.compose, "down", "-v", check=False)
    try:
        p.run(*p.compose, "up", "-d", *UP, timeout=900)
        p.wait_healthy(p.containers())
        # the next hop: Mailyard's image running the sink, on the compose network
        sink = f"{p.project}_sink"
        p.podman("run", "-d", "--name", sink, "--network", f"{p.project}_default",
                 "-v", f"{ROOT / 'tests/containers'}:/sink:ro", "-v", f"{p.out}:/out",
                 p.env["MAILYARD_IMAGE"], "python", "/sink/sink.py", "2525", "/out")
        p.sink_ip = p.podman("inspect", sink, "--format",
                             "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
                             ).stdout.strip()
        yield p
    except BaseException:
        print(p.logs())
        raise
    finally:
        p.podman("rm", "-f", f"{p.project}_sink", check=False)
        p.run(*p.compose, "down", "-v", check=False, timeout=300)
