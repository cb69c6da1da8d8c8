"""A PostgreSQL cluster of the load test's own (Debian's binaries, a temporary folder), so
that it may be stopped and started again under load without touching the shared server.

PostgreSQL refuses to run as root: as root, the cluster's folder belongs to `postgres` and
its commands run through runuser.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench.sinks import free_port


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise SystemExit("error: no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
    return Path(found[-1]).parent


class Cluster:
    def __init__(self, folder: Path) -> None:
        self.bin = _binaries()
        self.data = folder / "pgdata"
        self.data.mkdir()
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")  # the socket folder, and pgdata's parent
            shutil.chown(self.data, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.log = folder / "postgres.log"
        self.start()

    @property
    def url(self) -> str:
        """The maintenance database's URL (create the bench's database in it)."""
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True)

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "start",
        )
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise SystemExit(f"error: PostgreSQL did not listen:\n{self.log.read_text()}")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: sessions are ended (their transactions rolled back), as a restart does."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()
