"""The whole platform on one machine: a private nats-server and every service as its own
process, supervised (daemontools' supervise: a service that dies is started again).

`mailyard up` runs it in the foreground; tests/e2e and bench/ use the same class with free
ports, so what they prove is what an operator runs.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from mailyard.api.control.v1 import control_pb2, control_pb2_grpc
from mailyard.cli.endpoints import Ports
from mailyard.cli.mailuser import MailUser, prepare_mail_dir
from mailyard.cli.natshealth import StorageWatch
from mailyard.core import auth
from mailyard.core.natsserver import NatsServer, free_port
from mailyard.mail_access import dovecot_conf

log = logging.getLogger(__name__)


@dataclass
class ServiceSpec:
    name: str                 # process name, as in logs and the table (unique)
    module: str               # python -m <module>
    prefix: str               # env prefix
    http_port: int
    grpc_port: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    service: str = ""         # the service a replica belongs to (its env group)
    argv: list[str] = field(default_factory=list)  # not Python: this command (Dovecot)
    tcp_port: int = 0         # ready when this port accepts (no /readyz), e.g. IMAP

    @property
    def group(self) -> str:
        return self.service or self.name


@dataclass
class Running:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes]
    started: float
    restarts: int = 0


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before fork: the child only calls it
PR_SET_PDEATHSIG = 1
_SETPRIV = shutil.which("setpriv")


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, even by kill -9, so a
    killed `mailyard up` never leaves services running unsupervised (the kernel delivers
    it; a process group would need the supervisor alive to signal it)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died between fork and prctl
        os._exit(1)


def spawn_supervised(argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Popen for a supervised child: it gets SIGTERM when this process dies.

    util-linux's setpriv sets the parent-death signal and execs the child (same pid), so
    Popen needs no preexec_fn. With one, Python forks and runs gRPC's fork handlers, and
    since grpcio 1.80 those sometimes abort the child before its exec when this process
    has gRPC channels in use (grpc/grpc#43055; 10 of 300 children here, a service "exited
    with -6" at start). Without one, Python spawns with vfork and no handler runs. Where
    setpriv is missing, the preexec_fn is the fallback."""
    if _SETPRIV:
        return subprocess.Popen([_SETPRIV, "--pdeathsig", "TERM", "--", *argv],
                                **kwargs)  # type: ignore[call-overload]
    parent = os.getpid()
    return subprocess.Popen(argv, preexec_fn=lambda: _die_with_parent(parent),  # noqa: PLW1509
                            **kwargs)  # type: ignore[call-overload]


def taken_ports(ports: dict[str, int]) -> list[str]:
    """`name 127.0.0.1:port` for each port something already listens on (SO_REUSEADDR, so a
    port held only by closing connections counts as free, as it does for our servers)."""
    taken = []
    for name, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                taken.append(f"{name} 127.0.0.1:{port}")
    return taken


def free_ports() -> Ports:
    """A Ports table of free loopback ports (tests, benchmarks, a second instance)."""
    names = [f.name for f in dataclasses.fields(Ports)]
    return Ports(**dict(zip(names, distinct_free_ports(len(names)), strict=True)))


def distinct_free_ports(count: int, taken: set[int] | None = None) -> list[int]:
    """`count` free loopback ports, all different and not in `taken` (free_port never
    hands out a port twice in one process)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in (taken or set()):
            ports.append(port)
    return ports


def default_ingress_replicas() -> int:
    """One SMTP process per core (at most 4): a connection costs CPU in one process, and the
    kernel spreads connections over processes sharing the port (SO_REUSEPORT). On a 2-core
    host one process was the bottleneck of connection-per-message traffic with a core idle."""
    return max(1, min(4, os.cpu_count() or 1))


def nats_procs(cpus: int | None = None) -> int:
    """GOMAXPROCS for the platform's nats-server: one per four cores, at least one. It
    shares the host with the Python services and needs about a tenth of the CPU; with one
    Go processor per core, the idle ones spin looking for work. On 2 cores, 1 instead of 2
    took nats-server's CPU per message down by 15-22 % and the whole platform's rate up a
    few percent (bench.field A/Bs, docs/architecture.md, "Where the time goes")."""
    return max(1, (cpus or os.cpu_count() or 1) // 4)


class Platform:
    ORDER = ("directory", "relay-auth", "queue", "local-delivery", "remote-delivery",
             "smtp-ingress")

    def __init__(self, data_dir: Path | str = "var", ports: Ports | None = None,
                 env: dict[str, dict[str, str]] | None = None, replicas: int = 1,
                 sync_always: bool = False, ingress_replicas: int = 1,
                 me: str | None = None, mail_user: MailUser | None = None,
                 dovecot: bool = True, tls: tuple[Path, Path] | None = None) -> None:
        self.data = Path(data_dir).resolve()
        self.me = me  # written to control/me once the directory answers
        self.ports = ports or Ports()
        self.extra_env = env or {}
        self.replicas = replicas  # remote-delivery replicas
        self.ingress_replicas = ingress_replicas  # share the SMTP ports (SO_REUSEPORT)
        self.nats = NatsServer(self.data / "nats", port=self.ports.nats,
                               monitor_port=self.ports.nats_monitor, sync_always=sync_always,
                               procs=nats_procs())
        self.running: dict[str, Running] = {}
        self.logs = self.data / "log"
        self._given: set[int] = set()
        self._nats_wanted = False  # supervise NATS between start() and stop()
        self.nats_watch = (StorageWatch(self.ports.nats_monitor, self.data / "nats")
                           if self.ports.nats_monitor else None)
        self.mail_user = mail_user or MailUser.default()
        # IMAP/POP3 run when Dovecot is installed (and not turned off); else a note says how.
        self.dovecot = dovecot_conf.dovecot_binary() if dovecot else None
        self.notes = [] if self.dovecot or not dovecot else [dovecot_conf.INSTALL_HINT]
        self.tls = tls  # (cert, key) for SMTP and Dovecot; None: ingress's self-signed pair

    # -- what runs where -----------------------------------------------------------------

    @property
    def spool_dir(self) -> Path:
        return self.data / "spool"

    @property
    def mail_dir(self) -> Path:
        return self.data / "mail"

    def specs(self) -> list[ServiceSpec]:
        p = self.ports
        specs = [
            ServiceSpec("directory", "mailyard.directory", "DIRECTORY", p.directory_http,
                        p.directory_grpc),
            ServiceSpec("relay-auth", "mailyard.relay_auth", "RELAYAUTH", p.relayauth_http,
                        p.relayauth_grpc,
                        {"DIRECTORY_ADDR": f"127.0.0.1:{p.directory_grpc}"}),
            ServiceSpec("queue", "mailyard.queue", "QUEUE", p.queue_http, p.queue_grpc,
                        {"STATE_DIR": str(self.data / "queue")}),
            ServiceSpec("local-delivery", "mailyard.local_delivery", "LOCAL", p.local_http,
                        extra={"MAIL_DIR": str(self.mail_dir),
                               # list members' confirmations (role listmail)
                               "DIRECTORY_ADDR": f"127.0.0.1:{p.directory_grpc}",
                               **self.mail_user.local_delivery_env()}),
        ]
        if self.dovecot:
            specs.append(ServiceSpec("mail-access", "mailyard.mail_access", "MAILACCESS",
                                     p.mailaccess_http, extra={
                                         "AUTH_SOCKET": str(self.auth_socket),
                                         "AUTH_SOCKET_OWNER": self.mail_user.dovecot_auth_user,
                                         "RELAY_AUTH_ADDR": f"127.0.0.1:{p.relayauth_grpc}",
                                         "MAIL_DIR": str(self.mail_dir)}))
        for i in range(self.replicas):
            # extra replicas get their own free ports; they share the durable consumer
            http, grpc_port = (p.remote_http, p.remote_grpc) if i == 0 else self._spare(2)
            name = "remote-delivery" if i == 0 else f"remote-delivery-{i + 1}"
            # the ingress's key folder: bounces and vacation replies are signed on the way out
            specs.append(ServiceSpec(name, "mailyard.remote_delivery", "REMOTE", http,
                                     grpc_port, {"INSTANCE": name,
                                                 "DKIM_DIR": str(self.data / "dkim")},
                                     "remote-delivery"))
        for i in range(self.ingress_replicas):
            name = "smtp-ingress" if i == 0 else f"smtp-ingress-{i + 1}"
            extra = {"SMTP_PORT": str(p.smtp), "SUBMISSION_PORT": str(p.submission),
                     "SMTPS_PORT": str(p.smtps), "TLS_DIR": str(self.data / "tls"),
                     "RELAY_AUTH_ADDR": f"127.0.0.1:{p.relayauth_grpc}", "INSTANCE": name,
                     "DKIM_DIR": str(self.data / "dkim")}
            if self.ingress_replicas > 1:
                extra["REUSE_PORT"] = "true"
            if self.tls:
                extra.update(TLS_CERT=str(self.tls[0]), TLS_KEY=str(self.tls[1]))
            specs.append(ServiceSpec(name, "mailyard.smtp_ingress", "INGRESS",
                                     p.ingress_http if i == 0 else self._spare(1)[0],
                                     extra=extra,
                                     service="smtp-ingress"))
        return specs

    @property
    def auth_socket(self) -> Path:
        return self.data / "run" / "mail-access" / "auth.sock"

    def dovecot_spec(self) -> ServiceSpec:
        """Dovecot, configured from deploy/dovecot/ into <data>/dovecot (rendered at each
        start, so a moved port or mail user is picked up)."""
        p = self.ports
        cert, key = self.tls or (self.data / "tls" / "smtp-cert.pem",
                                 self.data / "tls" / "smtp-key.pem")
        conf = dovecot_conf.render(dovecot_conf.DovecotConfig(
            out_dir=self.data / "dovecot", base_dir=self.data / "run" / "dovecot",
            state_dir=self.data / "dovecot" / "state", log_path=self.logs / "dovecot.log",
            auth_socket=self.auth_socket, ssl_cert=cert, ssl_key=key,
            mail_uid=self.mail_user.uid, mail_gid=self.mail_user.gid,
            imap_port=p.imap, imaps_port=p.imaps, pop3_port=p.pop3, pop3s_port=p.pop3s,
            stats_port=p.dovecot_stats))
        assert self.dovecot is not None
        return ServiceSpec("dovecot", "", "", p.dovecot_stats,
                           argv=[self.dovecot, "-F", "-c", str(conf)], tcp_port=p.imap)

    def _spare(self, count: int) -> list[int]:
        """Ports for extra replicas, never one of the table's (or one handed out before)."""
        ports = distinct_free_ports(count, set(dataclasses.astuple(self.ports)) | self._given)
        self._given.update(ports)
        return ports

    @property
    def tokens_file(self) -> Path:
        """The admin plane's token table, made at the first start (owner-only) and kept:
        every service enforces it, the CLI finds it (cli_env, or ./var/auth/tokens)."""
        return self.data / "auth" / "tokens"

    def env_for(self, spec: ServiceSpec) -> dict[str, str]:
        pre = f"MAILYARD_{spec.prefix}_"
        env = {
            f"{pre}NATS_URL": self.nats.url,
            f"{pre}SPOOL_DIR": str(self.spool_dir),
            f"{pre}HTTP_HOST": "127.0.0.1",
            f"{pre}HTTP_PORT": str(spec.http_port),
            f"{pre}TOKENS_FILE": str(self.tokens_file),
            # outgoing calls (ingress -> relay-auth, relay-auth -> directory) take their
            # role's line of the same table
            f"{pre}TOKEN_FILE": str(self.tokens_file),
        }
        if spec.grpc_port:
            env[f"{pre}GRPC_HOST"] = "127.0.0.1"
            env[f"{pre}GRPC_PORT"] = str(spec.grpc_port)
        env.update({pre + k: v for k, v in spec.extra.items()})
        env.update({pre + k: v for k, v in self.extra_env.get(spec.group, {}).items()})
        return {**os.environ, **env}

    def cli_env(self) -> dict[str, str]:
        """Environment for the `mailyard` command to talk to this platform."""
        p = self.ports
        return {
            "MAILYARD_QUEUE_ADDR": f"127.0.0.1:{p.queue_grpc}",
            "MAILYARD_REMOTE_ADDR": f"127.0.0.1:{p.remote_grpc}",
            "MAILYARD_RELAYAUTH_ADDR": f"127.0.0.1:{p.relayauth_grpc}",
            "MAILYARD_DIRECTORY_ADDR": f"127.0.0.1:{p.directory_grpc}",
            "MAILYARD_TOKEN_FILE": str(self.tokens_file),
        }

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start NATS and every service, each ready before this returns. A port already
        taken (a second `mailyard up`) fails the start before anything runs: otherwise
        the services would die on bind and be restarted forever."""
        taken = taken_ports(dataclasses.asdict(self.ports))
        if taken:
            raise OSError(f"port in use ({', '.join(taken)}): is another `mailyard up` "
                          "running? stop it, or choose other ports with --ports")
        for folder in (self.data, self.logs, self.spool_dir, self.mail_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        prepare_mail_dir(self.data, self.mail_dir, self.mail_user)
        self.ensure_tokens()
        self.nats.start(self.logs / "nats.log", spawn=spawn_supervised)
        self._nats_wanted = True
        try:
            for spec in self.specs():
                self.running[spec.name] = Running(spec, self._spawn(spec), time.monotonic())
            for run in self.running.values():
                self.wait_ready(run.spec, timeout)
            if self.me:
                self.set_control("me", self.me + "\n")
            if self.dovecot:  # last: it needs the bridge and the TLS pair ingress made
                spec = self.dovecot_spec()
                self.running[spec.name] = Running(spec, self._spawn(spec), time.monotonic())
                self.wait_ready(spec, timeout)
        except BaseException:
            self.stop()
            raise

    def ensure_tokens(self) -> None:
        """The token table: made at the first start, and given the roles a later release
        added (each service reads its own role's line)."""
        if not self.tokens_file.exists():
            auth.write_table(self.tokens_file)
        elif added := auth.add_missing_roles(self.tokens_file):
            self.notes.append(f"tokens for {', '.join(added)} added to {self.tokens_file}")

    def set_control(self, name: str, text: str) -> None:
        """Write a control file through the directory (validated there, seen by all)."""
        token = auth.read_token(self.tokens_file, "admin")
        with auth.channel(f"127.0.0.1:{self.ports.directory_grpc}", token) as chan:
            try:
                control_pb2_grpc.ControlStub(chan).Set(
                    control_pb2.SetRequest(name=name, text=text), timeout=10)
            except grpc.RpcError as exc:
                raise RuntimeError(f"control/{name}: {exc.details()}") from None

    def _spawn(self, spec: ServiceSpec) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{spec.name}.log", "ab") as log:
            return spawn_supervised(spec.argv or [sys.executable, "-m", spec.module],
                                    env=self.env_for(spec), stdout=log,
                                    stderr=subprocess.STDOUT,
                                    start_new_session=True)  # Ctrl-C goes to us, not them

    def ready(self, spec: ServiceSpec) -> bool:
        if spec.tcp_port:
            try:
                with socket.create_connection(("127.0.0.1", spec.tcp_port), timeout=1) as s:
                    return s.recv(64).startswith(b"* OK")  # the IMAP greeting
            except OSError:
                return False
        url = f"http://127.0.0.1:{spec.http_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_ready(self, spec: ServiceSpec, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        run = self.running[spec.name]
        while time.monotonic() < deadline:
            if run.proc.poll() is not None:
                raise RuntimeError(f"{spec.name} exited with {run.proc.returncode}; "
                                   f"see {self.logs / (spec.name + '.log')}")
            if self.ready(spec):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{spec.name} not ready after {timeout:.0f}s; "
                           f"see {self.logs / (spec.name + '.log')}")

    def supervise_once(self) -> list[str]:
        """Restart NATS and services that died (services at most once every 2 s each), and
        nats-server when it is stuck on a storage write error after its volume has space
        again (natshealth). Returns one line per restart, saying what and why. The
        services reconnect to the restarted NATS by themselves (bus.connect reconnects
        forever); JetStream's store on disk brings the streams back."""
        events = []
        if self._nats_wanted and (self.nats.proc is None or self.nats.proc.poll() is not None):
            if self._start_nats():
                events.append("nats-server died; started again")
        elif self._nats_wanted and self.nats_watch and (stuck := self.nats_watch.due()):
            # SIGTERM (JetStream flushes and shuts down cleanly), then a new process
            self.nats.stop()
            if self._start_nats():
                events.append(f"nats-server restarted: {stuck} (the volume has space again;"
                              " a write error stays until nats-server restarts)")
        for name, run in self.running.items():
            if run.proc.poll() is not None and time.monotonic() - run.started > 2:
                run.proc = self._spawn(run.spec)
                run.started = time.monotonic()
                run.restarts += 1
                events.append(f"{name} died; started again")
        return events

    def _start_nats(self) -> bool:
        try:
            self.nats.start(self.logs / "nats.log", spawn=spawn_supervised)
            return True
        except (OSError, TimeoutError) as exc:  # tried again on the next round
            log.warning("nats-server did not start again: %s", exc)
            return False

    def kill(self, name: str) -> None:
        """kill -9 one service (tests of the durability promise)."""
        run = self.running[name]
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGKILL)
            run.proc.wait()

    def restart(self, name: str, timeout: float = 30.0) -> None:
        run = self.running[name]
        if run.proc.poll() is None:
            run.proc.terminate()
            run.proc.wait(15)
        run.proc = self._spawn(run.spec)
        run.started = time.monotonic()
        self.wait_ready(run.spec, timeout)

    def stop(self) -> None:
        """SIGTERM in reverse start order (ingress first: stop accepting), then NATS."""
        for run in reversed(list(self.running.values())):
            if run.proc.poll() is None:
                run.proc.terminate()
        for run in reversed(list(self.running.values())):
            try:
                run.proc.wait(15)
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait()
        self.running.clear()
        self._nats_wanted = False
        self.nats.stop()

    def table(self) -> str:
        p = self.ports
        rows = [("nats-server", f"nats://127.0.0.1:{p.nats}", f"http://127.0.0.1:{p.nats_monitor}")]
        for run in self.running.values():
            s = run.spec
            where = f"grpc 127.0.0.1:{s.grpc_port}" if s.grpc_port else ""
            if s.group == "smtp-ingress":
                where = f"smtp 127.0.0.1:{p.smtp} submission :{p.submission} smtps :{p.smtps}"
            elif s.name == "dovecot":
                where = (f"imap 127.0.0.1:{p.imap} imaps :{p.imaps} pop3 :{p.pop3} "
                         f"pop3s :{p.pop3s}")
            rows.append((s.name, where, f"http://127.0.0.1:{s.http_port}/metrics"))
        width = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{'service':<{width[0]}}  {'listens':<{width[1]}}  metrics"]
        lines += [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows]
        lines.append(f"data: {self.data}   logs: {self.logs}   maildirs: {self.mail_dir} "
                     f"(mail user {self.mail_user.describe()})")
        lines += self.notes
        lines.append(f"admin tokens: {self.tokens_file} (the CLI finds ./var/auth/tokens; "
                     f"from elsewhere: export MAILYARD_TOKEN_FILE={self.tokens_file})")
        return "\n".join(lines)
