"""A real Portico process (`portico serve` under uvicorn) for end-to-end and browser tests.

Bring both fixtures into a test module (conftest.py does not provide them):

    from tests import server

    live_server = server.live_server
    live_server_process = server.live_server_process

`live_server` is the base URL, e.g. "http://127.0.0.1:54321". The process runs once per test
module on a fresh SQLite database in a temporary folder; being a development server, it
migrates and seeds the demo firm (services/firm/demo.py) before it listens.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

DEMO_FIRM = "demo"
DEMO_OWNER_EMAIL = "owner@demo.example"
DEMO_OWNER_NAME = "Olivia Owner"
DEMO_PASSWORD = "portico-demo-2026"
DEMO_ACCOUNTS = 3

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A port nobody listens on now (the OS picks it; the tiny race is acceptable in tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def portico_command() -> list[str]:
    """The venv's `portico` script, next to the Python running pytest."""
    script = Path(sys.executable).parent / "portico"
    if not script.exists():
        pytest.fail(f"{script} not found: run make install", pytrace=False)
    return [str(script)]


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def outbox(self) -> Path:
        """Where the server's embedded mail transport writes .eml files."""
        return self.log_path.parent / "var" / "outbox"

    def log(self, start: int = 0) -> str:
        """The process's output (stdout and stderr) from byte offset `start`."""
        with self.log_path.open("rb") as log:
            log.seek(start)
            return log.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.fail(f"portico serve exited with {self.process.returncode}")
            try:
                response = httpx.get(f"{self.url}/readyz", timeout=2)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.2)
        self.fail(f"/readyz not 200 after {timeout:.0f} s (last: {last})")

    def fail(self, reason: str) -> None:
        pytest.fail(f"{reason}\n--- portico serve output ---\n{self.log()}", pytrace=False)

    def stop(self) -> int:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL if it hangs; the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(folder: Path, settings: dict[str, str] | None = None) -> LiveServer:
    """Starts `portico serve` on a free port with its own var dir (and these PORTICO_*
    `settings`, if any), and waits for /readyz."""
    port = free_port()
    var_dir = folder / "var"
    var_dir.mkdir(parents=True, exist_ok=True)
    # Only our PORTICO_* settings: a developer's database URL or production env must not leak.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTICO_")}
    env.update(PORTICO_VAR_DIR=str(var_dir), PORTICO_ENV="development", PYTHONUNBUFFERED="1")
    env.update(settings or {})
    log_path = folder / "portico.log"
    with log_path.open("wb") as log:
        # A file, not a pipe: a chatty server can never block on a full pipe buffer.
        process = subprocess.Popen(
            [*portico_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=folder,  # so the project's .env, if any, is not read
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def live_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server per test module; fails the module's last test if the server crashed."""
    server = start_server(tmp_path_factory.mktemp("portico-server"))
    yield server
    crashed = server.process.poll() is not None
    code = server.stop()
    if crashed:
        server.fail(f"portico serve died during the tests (exit code {code})")


@pytest.fixture
def live_server(live_server_process: LiveServer) -> Iterator[str]:
    """The running server's base URL."""
    start = live_server_process.log_size()
    yield live_server_process.url
    # Captured output: pytest shows this test's share of the server log only if it failed.
    print(f"--- portico serve output during this test ---\n{live_server_process.log(start)}")
