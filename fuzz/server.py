"""A production-mode `portico serve` on a fresh database, with a firm whose owner can sign in.

Production mode because that is what an attacker meets: introspection, GraphiQL and
suggestions off, no private mail hosts. The schema therefore comes from schema.graphql.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

POSTGRES_URL = os.environ.get("PORTICO_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
FIRM_SLUG = "fuzz"
OWNER_EMAIL = "owner@fuzz.example"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class ServerError(Exception):
    """The server could not be started or signed into."""


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    password: str

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    def log(self, start: int = 0) -> str:
        with self.log_path.open("rb") as log:
            log.seek(start)
            return log.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def alive(self) -> bool:
        if self.process.poll() is not None:
            return False
        try:
            return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def staff_token(self) -> str:
        """Signs the owner in through staffSignIn (as any client would) and returns the token."""
        query = (
            "mutation($f: String!, $e: String!, $p: String!) "
            "{ staffSignIn(firm: $f, email: $e, password: $p) { token errors { code message } } }"
        )
        variables = {"f": FIRM_SLUG, "e": OWNER_EMAIL, "p": self.password}
        answer = httpx.post(
            self.graphql_url, json={"query": query, "variables": variables}, timeout=30
        ).json()
        token = ((answer.get("data") or {}).get("staffSignIn") or {}).get("token")
        if not token:
            raise ServerError(f"staffSignIn gave no token: {answer}")
        return str(token)

    def token_works(self, token: str) -> bool:
        answer = httpx.post(
            self.graphql_url,
            json={"query": "{ viewer { __typename } }"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).json()
        return bool((answer.get("data") or {}).get("viewer"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def script(name: str) -> str:
    """A console script of the venv running us (portico, st)."""
    return str(Path(sys.executable).parent / name)


def _portico(*args: str, env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(
        [script("portico"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    if done.returncode:
        raise ServerError(f"portico {args[0]} failed:\n{done.stdout}{done.stderr}")


@contextlib.contextmanager
def database(backend: str, folder: Path) -> Iterator[str]:
    """A fresh database URL: a file under `folder`, or a PostgreSQL database dropped after."""
    if backend == "sqlite":
        yield f"sqlite://{folder / 'portico.sqlite3'}"
        return
    name = f"portico_fuzz_{secrets.token_hex(4)}"
    asyncio.run(_postgres(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _postgres(statement: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def running_server(database_url: str, folder: Path) -> Iterator[Server]:
    """Migrates, creates the firm, serves on a free port until the block ends."""
    var_dir = folder / "var"
    var_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    # Only our PORTICO_* settings: a developer's own must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
    env.update(
        PORTICO_ENV="production",
        # The fuzzer sends thousands of requests from one address: judged on its input, not
        # refused for its pace (tests/test_rate_limits.py covers the limits).
        PORTICO_RATE_LIMIT="false",
        PORTICO_SECRET_KEY=secrets.token_hex(32),
        PORTICO_VAR_DIR=str(var_dir),
        PORTICO_DATABASE_URL=database_url,
        PYTHONUNBUFFERED="1",
    )
    _portico("migrate", env=env, cwd=folder)
    _portico(
        "create-firm",
        *("--name", "Fuzz", "--slug", FIRM_SLUG, "--owner-email", OWNER_EMAIL),
        # One argument with "=": a password may start with "-" (token_urlsafe's alphabet),
        # which argparse would take for an option.
        *("--owner-name", "Fuzz Owner", f"--owner-password={password}"),
        env=env,
        cwd=folder,
    )
    port = free_port()
    log_path = folder / "portico.log"
    with log_path.open("wb") as log:
        # A file, not a pipe: a chatty server can never block on a full pipe buffer.
        process = subprocess.Popen(
            [script("portico"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, password)
    try:
        _wait_ready(server)
        yield server
    finally:
        server.stop()


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerError(f"portico serve exited:\n{server.log()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise ServerError(f"/readyz not 200 after {READY_TIMEOUT:.0f} s:\n{server.log()}")
