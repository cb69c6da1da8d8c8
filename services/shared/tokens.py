"""Single-use secrets sent by mail or kept by clients: 256 random bits, only a hash stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime


def new_token() -> tuple[str, str]:
    """A fresh token and the SHA-256 hex digest to store in its place."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


PENDING, USED, REVOKED, EXPIRED = "PENDING", "USED", "REVOKED", "EXPIRED"


def link_status(
    used_at: datetime | None, revoked_at: datetime | None, expires_at: datetime, at: datetime
) -> str:
    """Where a single-use link stands: used, revoked, expired or still pending."""
    if used_at is not None:
        return USED
    if revoked_at is not None:
        return REVOKED
    return EXPIRED if expires_at <= at else PENDING
