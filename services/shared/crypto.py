"""Symmetric encryption for secrets at rest (outbox bodies now, mailbox passwords later).

Every key is derived from one secret: PORTICO_SECRET_KEY, or in development a random secret
generated once into {var_dir}/secret.key (mode 0600), so a fresh checkout works with no set-up
and every process sharing the var folder (serve, workers) reads the same key. Production has
no generated key: a lost or per-host key would make queued mail unreadable, so it must be set.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from portico.settings import Settings

log = logging.getLogger(__name__)

SECRET_FILE = "secret.key"


class MissingSecretKey(RuntimeError):
    """Production without PORTICO_SECRET_KEY."""


def secret_key(settings: Settings) -> str:
    """The configured secret, or (development only) the one generated into the var folder."""
    if settings.secret_key:
        return settings.secret_key
    if settings.production:
        raise MissingSecretKey(
            "PORTICO_SECRET_KEY must be set in production (e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`); "
            "it encrypts queued mail and must be the same for every process."
        )
    return _file_secret(settings.var_dir / SECRET_FILE)


def fernet(settings: Settings, purpose: str) -> Fernet:
    """A Fernet whose key is derived for one purpose, so keys of different uses never match."""
    return _derived(secret_key(settings), purpose)


def open_link_token(settings: Settings, purpose: str, token: str) -> bytes:
    """What a token handed out in a link holds; InvalidToken unless it is exactly as issued.
    (base64 decoding ignores text after the padding, so `token + "x"` would open too.)"""
    try:
        exact = base64.urlsafe_b64encode(base64.urlsafe_b64decode(token)).decode() == token
    except ValueError:  # not base64 at all (binascii.Error), or not ASCII
        exact = False
    if not exact:
        raise InvalidToken
    return fernet(settings, purpose).decrypt(token.encode())


@functools.lru_cache(maxsize=16)
def _derived(secret: str, purpose: str) -> Fernet:
    # Derived once per (secret, purpose): a mass mailing encrypts thousands of bodies.
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"portico:{purpose}".encode())
    return Fernet(base64.urlsafe_b64encode(hkdf.derive(secret.encode())))


@functools.lru_cache(maxsize=4)
def _file_secret(path: Path) -> str:
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write a temporary file, then link it into place: link fails if another process won the
    # race, and then both use the winner's secret. No reader ever sees a half-written file.
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise RuntimeError(f"{path} is empty: delete it to generate a new secret key")
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 it", path)
    return value
