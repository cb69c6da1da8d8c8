"""The keys of sign-in throttle rows: hashed, so the table names nobody in clear. Sign-in
counts under them (services/firm/signin) and an erasure deletes them (services/crm/erasure)."""

from __future__ import annotations

import hashlib


def account_key(kind: str, firm_slug: str, email: str) -> str:
    """The row of one person's failed sign-ins: `kind` is "staff" or "client"; the slug and
    the email as normalised (trimmed, lower case)."""
    return hashlib.sha256(f"{kind}\0{firm_slug}\0{email}".encode()).hexdigest()
