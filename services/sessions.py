"""Session tokens: 256 random bits, only their SHA-256 stored, expiring and revocable."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from models import Session, StaffMember


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def now() -> datetime:
    return datetime.now(UTC)


async def start_staff_session(staff: StaffMember, ttl: timedelta) -> tuple[str, Session]:
    token = secrets.token_urlsafe(32)
    session = await Session.create(
        token_hash=hash_token(token),
        firm_id=staff.firm_id,
        staff_member=staff,
        expires_at=now() + ttl,
    )
    return token, session


async def resolve_session(token: str | None) -> Session | None:
    """The live session for a token, with its staff member loaded; one query."""
    if not token or len(token) > 256:
        return None
    session = (
        await Session.filter(
            token_hash=hash_token(token),
            revoked_at=None,
            expires_at__gt=now(),
            staff_member__active=True,
        )
        .select_related("staff_member")
        .first()
    )
    return session


async def revoke(session: Session) -> None:
    await Session.filter(pk=session.pk).update(revoked_at=now())


async def revoke_all_for_staff(staff_id: int) -> int:
    return await Session.filter(staff_member_id=staff_id, revoked_at=None).update(revoked_at=now())
