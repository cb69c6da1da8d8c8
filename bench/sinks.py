"""SMTP servers for bench.deliveries: each counts the Message-IDs it accepted.

- `smtp-sink` (Postfix's SMTP test server, C, one event-driven process): fast enough that
  the clients, not the server, set the pace. Debian/Ubuntu: `DEBIAN_FRONTEND=noninteractive
  apt-get install -y postfix` (the package's daemon need not run; only /usr/sbin/smtp-sink is
  used). Each message is dumped to a file of its own (`-d`) in a tmpfs folder, so the bench
  can check that each arrived exactly once.
- `aiosmtpd` (the test extras): a thread of the bench process. Python, and it shares the
  bench's interpreter: about 650 msg/s even from one reused connection, a ceiling below what
  Portico's workers deliver.

Also the CPU time of processes (from /proc, Linux): where two cores go during a run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any, Protocol

SMTP_SINK = "smtp-sink"
AIOSMTPD = "aiosmtpd"
TICK = os.sysconf("SC_CLK_TCK")


class Sink(Protocol):
    label: str
    port: int
    pid: int | None  # the server's own process, if it has one (its CPU is counted apart)

    def take(self) -> Counter[str]:
        """The Message-IDs accepted since the last take, and a fresh count."""
        ...

    def started(self) -> int:
        """Mail transactions begun since the last take (cheap: no parsing)."""
        ...

    def stop(self) -> None: ...


def free_port() -> int:
    """A free port (neither server can be told to pick one and say which)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def message_id(parser: BytesHeaderParser, data: bytes) -> str:
    return str(parser.parsebytes(data)["Message-ID"])


class AiosmtpdSink:
    """aiosmtpd in a thread of this process; the handler parses headers only (cheap, and the
    same work whoever the client is)."""

    label = "aiosmtpd, a thread of the bench process"
    pid = None

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self._lock = threading.Lock()
        self._ids: Counter[str] = Counter()
        self._parser = BytesHeaderParser(policy=policy.compat32)
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        found = message_id(self._parser, envelope.content)
        with self._lock:
            self._ids[found] += 1
        return "250 OK"

    def take(self) -> Counter[str]:
        with self._lock:
            ids, self._ids = self._ids, Counter()
        return ids

    def started(self) -> int:
        with self._lock:
            return self._ids.total()

    def stop(self) -> None:
        self._controller.stop()


class SmtpSinkSink:
    """Postfix's smtp-sink in its own process, each message dumped to a file in tmpfs."""

    label = "Postfix smtp-sink, its own process"

    def __init__(self) -> None:
        binary = shutil.which(SMTP_SINK) or shutil.which(f"/usr/sbin/{SMTP_SINK}")
        if binary is None:
            raise SystemExit(
                "smtp-sink not found: DEBIAN_FRONTEND=noninteractive apt-get install -y "
                "postfix (or --sink aiosmtpd)"
            )
        shm = Path("/dev/shm")
        self._folder = Path(
            tempfile.mkdtemp(prefix="bench-sink-", dir=shm if shm.is_dir() else None)
        )
        self._parser = BytesHeaderParser(policy=policy.compat32)
        self.port = free_port()
        command = [binary, "-d", f"{self._folder}/m.", f"127.0.0.1:{self.port}", "1000"]
        if os.geteuid() == 0:  # smtp-sink refuses to run as root; it writes the dumps as nobody
            self._folder.chmod(0o777)
            command[1:1] = ["-u", "nobody"]
        self._process = subprocess.Popen(command, stderr=subprocess.PIPE)
        self.pid: int | None = self._process.pid
        self._wait_listening()

    def _wait_listening(self) -> None:
        for _ in range(100):
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
                raise SystemExit(f"smtp-sink exited: {error}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise SystemExit("smtp-sink did not listen")

    def take(self) -> Counter[str]:
        # smtp-sink closes a message's file before it answers the final "." (data_read), and
        # makes each name with O_EXCL, retrying on a clash: each accepted message is here whole.
        ids: Counter[str] = Counter()
        for path in self._folder.iterdir():
            ids[message_id(self._parser, path.read_bytes())] += 1
            path.unlink()
        return ids

    def started(self) -> int:
        return len(os.listdir(self._folder))  # a file is made at MAIL FROM

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        shutil.rmtree(self._folder, ignore_errors=True)


def start(kind: str) -> Sink:
    return SmtpSinkSink() if kind == SMTP_SINK else AiosmtpdSink()


# CPU time, in seconds, from /proc.


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def postgres_cpu(database: str) -> dict[int, float]:
    """CPU seconds of PostgreSQL's processes: the backends connected to `database` (their
    title names it), and the server's own (writer, checkpointer: shared with whatever else
    the server does). Backends of other databases are left out."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        backend = "(" in title or "[local]" in title  # "user db 127.0.0.1(port) state"
        if not backend or f" {database} " in title:
            found[int(entry.name)] = process_cpu(int(entry.name))
    return found


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / TICK, sum(values) / TICK
