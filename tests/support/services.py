"""Real-service availability for tests: skip with a reason, or fail under CI.

PORTICO_REQUIRE_SERVICES=1 turns every "skip: service missing" into a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get("PORTICO_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
CHROMIUM = os.environ.get("PORTICO_TEST_CHROMIUM", "/usr/bin/chromium")


def require_services() -> bool:
    return os.environ.get("PORTICO_REQUIRE_SERVICES") == "1"


def missing(reason: str) -> None:
    """Skip the test, or fail it when CI requires every service."""
    if require_services():
        pytest.fail(f"required service missing: {reason}", pytrace=False)
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_postgres() -> None:
    if not port_open("127.0.0.1", 5432):
        missing("PostgreSQL is not running on 127.0.0.1:5432")


def need_chromium() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None:
        missing(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    return str(path)


REDIS_URL = os.environ.get("PORTICO_TEST_REDIS", "redis://127.0.0.1:6379/0")


def need_redis() -> str:
    """The test Redis URL (PORTICO_TEST_REDIS), or skip (fail under PORTICO_REQUIRE_SERVICES)."""
    parts = urlsplit(REDIS_URL)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if not port_open(host, port):
        missing(f"Redis is not running on {host}:{port} (apt-get install redis-server)")
    return REDIS_URL


def need_dovecot() -> str:
    """The dovecot binary (Debian's dovecot-imapd)."""
    path = shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None
    )
    if path is None:
        missing("Dovecot not found (apt-get install dovecot-imapd)")
    return str(path)
