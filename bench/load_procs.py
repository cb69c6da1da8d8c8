"""The load test's processes: a private Redis, `portico serve` and `portico worker` processes.

Redis is a redis-server of the bench's own on a free port: pub/sub channels are not
separated by database number, so on the shared Redis another run's `firm:1` events would
reach this run's subscribers (and the bench may restart its own Redis).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.sinks import free_port

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0


@dataclass
class Proc:
    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    url: str = ""  # an API process's base URL
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.env.get("PORTICO_VAR_DIR", ROOT),  # no project .env is read there
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(sig)

    def wait(self, within: float) -> int | None:
        """The exit code once the process ends (SIGKILL after `within` seconds)."""
        assert self.process is not None
        try:
            return self.process.wait(within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (an orderly stop), SIGKILL if it hangs; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def portico_env(base: dict[str, str]) -> dict[str, str]:
    """This process's environment without any PORTICO_* of the developer's, plus `base`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    env.update(base)
    return env


def api(folder: Path, n: int, env: dict[str, str]) -> Proc:
    port = free_port()
    script = str(Path(sys.executable).with_name("portico"))
    command = [script, "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = Proc(f"api-{n}", command, env, folder / f"api-{n}.log", f"http://127.0.0.1:{port}")
    proc.start()
    return proc


def worker(folder: Path, n: int, env: dict[str, str]) -> Proc:
    script = str(Path(sys.executable).with_name("portico"))
    proc = Proc(f"worker-{n}", [script, "worker"], env, folder / f"worker-{n}.log")
    proc.start()
    return proc


def wait_ready(proc: Proc) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not proc.alive():
            raise SystemExit(f"error: {proc.name} exited:\n{proc.tail()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(proc.url + "/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"error: {proc.name} not ready:\n{proc.tail()}")


WORKER_STARTED = "mail delivery started"


def starts(proc: Proc) -> int:
    """How often the worker's log (kept across restarts) says its loops started."""
    return proc.log.read_text(errors="replace").count(WORKER_STARTED)


def wait_worker(proc: Proc, times: int = 1) -> None:
    """Until the worker's log says its loops started (the `times`th time)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not proc.alive():
            raise SystemExit(f"error: {proc.name} exited:\n{proc.tail()}")
        if starts(proc) >= times:
            return
        time.sleep(0.1)
    raise SystemExit(f"error: {proc.name} did not start:\n{proc.tail()}")


class Redis:
    """A redis-server of the bench's own, no persistence, on a free port."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("error: redis-server not found (apt-get install -y redis-server)")
        self.port = free_port()
        self.folder = folder
        self.command = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
            "--logfile",
            str(folder / "redis.log"),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise SystemExit("error: redis-server did not listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
