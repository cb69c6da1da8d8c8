"""A Portico deployment on several hosts of tests/support/netns.py's network (root only).

`deployment()` builds, for one test module:
- a database host: a throwaway PostgreSQL cluster made with Debian's binaries
  (/usr/lib/postgresql/*/bin: initdb, postgres) and a Redis, both listening on that host's
  address only and asking for a password;
- a mail host: Dovecot (tests/support/imap.py's configuration) and aiosmtpd
  (tests/support/smtp_host.py), on that host's address;
- a worker host running `portico worker`, and an API host running `portico serve`
  (migrated and given a firm by the `portico` CLI, run on the API host).

Every Portico process is in production mode with its own var folder (no shared disk: files
in the database) and is told every address explicitly; nothing listens on, or is reached
through, 127.0.0.1. Everything runs inside its host's namespace; the test process reaches
the hosts from the root namespace over the same switch. All of it, and its temporary folder,
is gone after the block, whatever happened (a folder left by a killed run is removed by the
next one).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import netns
from tests.support.imap import CONFIG as DOVECOT_CONFIG
from tests.support.imap import PASSWORD as IMAP_PASSWORD
from tests.support.imap import ImapServer
from tests.support.server import LiveServer, portico_command

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("db", "api", "worker", "mail")
FOLDER_PREFIX = "portico-multihost-"
PG_PORT, REDIS_PORT, IMAP_PORT, SMTP_PORT, API_PORT = 5432, 6379, 143, 2525, 8000
DB_PASSWORD = "db-host-secret"
REDIS_PASSWORD = "redis-host-secret"
SECRET_KEY = "multihost-secret-key-shared-by-every-portico-process"
FIRM_SLUG, FIRM_NAME = "acme", "Acme LLP"
OWNER_EMAIL, OWNER_PASSWORD = "owner@acme.example", "owner-password-2026"
START_SECONDS = 60.0
STOP_SECONDS = 10.0


def postgres_bin() -> Path | None:
    """The newest of Debian's PostgreSQL binary folders (postgresql-NN package)."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    found = [p for p in found if (p / "initdb").exists()]
    return max(found, key=lambda p: int(p.parent.name), default=None) if found else None


def unavailable() -> str | None:
    """Why the deployment cannot be built here (None: it can)."""
    reason = netns.unavailable()
    if reason:
        return reason
    if postgres_bin() is None:
        return "PostgreSQL binaries not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
    if shutil.which("redis-server") is None:
        return "redis-server not found (apt-get install redis-server)"
    if dovecot_binary() is None:
        return "Dovecot not found (apt-get install dovecot-imapd)"
    if shutil.which("setpriv") is None:
        return "setpriv not found (apt-get install util-linux)"
    return None


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None
    )


# Processes ---------------------------------------------------------------------------------


@dataclass
class Service:
    """A process started in a host, its output in a file (never a pipe that could fill)."""

    name: str
    argv: list[str]
    env: dict[str, str] | None
    cwd: Path
    log_path: Path
    stop_signal: int = signal.SIGTERM
    process: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.log_path.write_bytes(b"")
        self.start()

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Services:
    folder: Path
    started: list[Service] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        stop_signal: int = signal.SIGTERM,
    ) -> Service:
        service = Service(name, argv, env, cwd, self.folder / f"{name}.log", stop_signal)
        self.started.append(service)
        return service

    def stop_all(self) -> None:
        for service in reversed(self.started):
            service.stop()

    def report(self, tail: int = 4000) -> str:
        """Each process's last output, for a failing test's report."""
        return "\n".join(
            f"--- {s.name} ({'running' if s.alive else f'exit {s.process.returncode}'}) ---\n"
            f"{s.log()[-tail:]}"
            for s in self.started
        )


def wait_until(check: Callable[[], bool], what: str, service: Service | None = None) -> None:
    """Polls `check` until it holds; fails naming `what` (and the service's output, should it
    exit meanwhile or the time run out)."""
    deadline = time.monotonic() + START_SECONDS
    while not check():
        if service is not None and not service.alive:
            raise RuntimeError(f"{service.name} exited while waiting for {what}:\n{service.log()}")
        if time.monotonic() > deadline:
            output = f":\n{service.log()}" if service is not None else ""
            raise RuntimeError(f"not within {START_SECONDS:g} s: {what}{output}")
        time.sleep(0.1)


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def run(argv: list[str], what: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def as_user(user: str, argv: list[str]) -> list[str]:
    """`argv` as `user` (setpriv execs it: signals reach the program itself)."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]


# The database host -------------------------------------------------------------------------


def start_postgres(
    services: Services, host: netns.Host, subnet: str, folder: Path
) -> tuple[str, Service]:
    """A new cluster listening on the host's address only (password logins from the
    network): the URL of its `portico` database, made here, and its process."""
    binaries = postgres_bin()
    assert binaries is not None
    data, password_file = folder / "pgdata", folder / "pgpassword"
    data.mkdir(mode=0o700)
    password_file.write_text(DB_PASSWORD)
    for path in (data, password_file):
        shutil.chown(path, "postgres", "postgres")
    initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres"]
    initdb += [f"--pwfile={password_file}", "--auth-local=trust", "--auth-host=scram-sha-256"]
    run(as_user("postgres", [*initdb, "-E", "UTF8", "--locale=C", "--no-sync"]), "initdb")
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {subnet} scram-sha-256\n")
    options = {
        "listen_addresses": host.address,
        "port": str(PG_PORT),
        "unix_socket_directories": str(data),
        # A throwaway cluster: no need to survive a power cut (but a crash of PostgreSQL
        # itself loses no commit: synchronous_commit stays on).
        "fsync": "off",
        "full_page_writes": "off",
    }
    argv = [str(binaries / "postgres"), "-D", str(data)]
    argv += [arg for name, value in options.items() for arg in ("-c", f"{name}={value}")]
    # SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for every client to leave).
    command = host.command(as_user("postgres", argv))
    service = services.start("postgres", command, stop_signal=signal.SIGINT)
    wait_until(lambda: listening(host.address, PG_PORT), "PostgreSQL listening", service)
    psql = [str(binaries / "psql"), "-h", str(data), "-U", "postgres", "-d", "postgres"]
    run(as_user("postgres", [*psql, "-c", "CREATE DATABASE portico"]), "CREATE DATABASE")
    return f"postgres://postgres:{DB_PASSWORD}@{host.address}:{PG_PORT}/portico", service


def start_redis(services: Services, host: netns.Host, folder: Path) -> str:
    (folder / "redis").mkdir()
    argv = ["redis-server", "--bind", host.address, "--port", str(REDIS_PORT)]
    argv += ["--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(folder / "redis")]
    service = services.start("redis", host.command(argv))
    wait_until(lambda: listening(host.address, REDIS_PORT), "Redis listening", service)
    return f"redis://:{REDIS_PASSWORD}@{host.address}:{REDIS_PORT}/0"


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (PostgreSQL's backends of its postmaster)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def unread_statements_from(host: netns.Host, peer: str, port: int = PG_PORT) -> bool:
    """Whether a connection from `peer` to `host`'s `port` has bytes its server has not read
    yet (a statement waiting on a backend that does not run)."""
    listed = run(host.command(["ss", "-Htn", "state", "established"]), "ss")
    for line in listed.splitlines():
        recv_q, _, local, remote = line.split()[:4]
        if local.endswith(f":{port}") and remote.rsplit(":", 1)[0] == peer and int(recv_q):
            return True
    return False


# The mail host -----------------------------------------------------------------------------


@dataclass
class NamespacedImapServer(ImapServer):
    """tests/support/imap.py's Dovecot, started inside a host (`append` and `stop` work from
    here, over the network and by the pid file)."""

    namespace: str = ""

    def start(self) -> None:
        conf = str(self.folder / "dovecot.conf")
        argv = ["ip", "netns", "exec", self.namespace, self.binary, "-c", conf]
        # Not captured: the daemon it leaves behind would hold a pipe open forever.
        with (self.folder / "start.log").open("ab") as log:
            started = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if started.returncode != 0:
            raise RuntimeError(f"dovecot failed:\n{(self.folder / 'start.log').read_text()}")
        wait_until(lambda: listening(self.host, self.port), "Dovecot listening")


def start_dovecot(host: netns.Host, folder: Path) -> NamespacedImapServer:
    binary = dovecot_binary()
    assert binary is not None
    folder.mkdir(mode=0o755)
    for sub in ("run", "state", "home"):
        (folder / sub).mkdir()
    shutil.chown(folder / "home", "dovecot", "dovecot")
    config = DOVECOT_CONFIG.format(dir=folder, port=IMAP_PORT, password=IMAP_PASSWORD)
    config = re.sub(r"(?m)^listen = .*$", f"listen = {host.address}", config)
    (folder / "dovecot.conf").write_text(config)
    server = NamespacedImapServer(host.address, IMAP_PORT, folder, binary, host.namespace)
    server.start()
    return server


def start_smtp(services: Services, host: netns.Host, folder: Path) -> Service:
    folder.mkdir()
    argv = [sys.executable, "-m", "tests.support.smtp_host", "--host", host.address]
    argv += ["--port", str(SMTP_PORT), "--folder", str(folder)]
    service = services.start("smtp", host.command(argv))
    wait_until(lambda: listening(host.address, SMTP_PORT), "aiosmtpd listening", service)
    return service


# Portico -----------------------------------------------------------------------------------


def portico_env(settings: dict[str, str]) -> dict[str, str]:
    """This environment without any PORTICO_* of the developer's, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
    env.update(PYTHONUNBUFFERED="1", **settings)
    return env


@dataclass
class Deployment:
    net: netns.Network
    services: Services
    api: LiveServer
    worker: Service
    postgres: Service
    imap: NamespacedImapServer
    smtp_folder: Path
    database_url: str
    redis_url: str
    var_dirs: dict[str, Path]

    @property
    def url(self) -> str:
        return self.api.url


def _remove_stale_folders() -> None:
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        match = re.match(rf"{FOLDER_PREFIX}(\d+)-", folder.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def deployment() -> Iterator[Deployment]:
    _remove_stale_folders()
    folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))
    folder.chmod(0o755)  # PostgreSQL and Dovecot run as their own users
    services = Services(folder)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, folder, True)
        net = stack.enter_context(netns.network(ROLES))
        stack.callback(services.stop_all)  # before the namespaces go
        try:
            yield _deploy(net, services, folder, stack)
        except BaseException:
            print(services.report())
            raise


def _deploy(
    net: netns.Network,
    services: Services,
    folder: Path,
    stack: ExitStack,
) -> Deployment:
    db, api, worker, mail = (net[role] for role in ROLES)
    database_url, postgres = start_postgres(services, db, str(net.subnet), folder)
    redis_url = start_redis(services, db, folder)
    imap = start_dovecot(mail, folder / "dovecot")
    stack.callback(imap.stop)
    smtp_folder = folder / "smtp"
    start_smtp(services, mail, smtp_folder)

    api_url = f"http://{api.address}:{API_PORT}"
    common = {
        "PORTICO_ENV": "production",
        "PORTICO_DATABASE_URL": database_url,
        "PORTICO_REDIS_URL": redis_url,
        # Every process reads what another encrypted (queued mail, mailbox passwords).
        "PORTICO_SECRET_KEY": SECRET_KEY,
        "PORTICO_FILE_STORE": "database",
        "PORTICO_SMTP_URL": f"smtp://{mail.address}:{SMTP_PORT}",
        "PORTICO_MAIL_FROM": "Acme LLP <no-reply@acme.example>",
        "PORTICO_PUBLIC_URL": api_url,
        # The firm's mail server is on the private network (production refuses that unless set).
        "PORTICO_ALLOW_PRIVATE_MAIL_HOSTS": "1",
    }
    var_dirs = {}
    for role in ("api", "worker"):
        var_dirs[role] = folder / role / "var"
        var_dirs[role].mkdir(parents=True)

    def env(role: str, **more: str) -> dict[str, str]:
        return portico_env({**common, "PORTICO_VAR_DIR": str(var_dirs[role]), **more})

    cli = portico_command()
    run(api.command([*cli, "migrate"]), "portico migrate", env("api"), folder / "api")
    create = ["create-firm", "--name", FIRM_NAME, "--slug", FIRM_SLUG]
    create += ["--owner-email", OWNER_EMAIL, "--owner-name", "Olivia Owner"]
    owner = env("api", PORTICO_OWNER_PASSWORD=OWNER_PASSWORD)
    run(api.command([*cli, *create]), "portico create-firm", owner, folder / "api")

    worker_env = env("worker", PORTICO_SYNC_INTERVAL_SECONDS="1", PORTICO_WORKER_POLL_SECONDS="0.2")
    worker_service = services.start(
        "worker", worker.command([*cli, "worker"]), worker_env, folder / "worker"
    )
    serve = [*cli, "serve", "--host", api.address, "--port", str(API_PORT)]
    api_service = services.start(
        "api",
        api.command(serve),
        env("api", PORTICO_INPROCESS_WORKER="0"),
        folder / "api",
    )
    live = LiveServer(api_url, api_service.process, api_service.log_path)
    live.wait_ready(START_SECONDS)
    for started in ("mail delivery started", "mailbox sync started"):
        wait_until(lambda text=started: text in worker_service.log(), started, worker_service)
    return Deployment(
        net,
        services,
        live,
        worker_service,
        postgres,
        imap,
        smtp_folder,
        database_url,
        redis_url,
        var_dirs,
    )
