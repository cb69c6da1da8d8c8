"""Session tokens: 256 random bits, only their SHA-256 stored, expiring and revocable."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from models import PortalUser, Session, StaffMember
from services.shared import session_rows
from services.shared.coalesce import Coalesced
from services.shared.tokens import hash_token, new_token

__all__ = ["hash_token", "now"]


def now() -> datetime:
    return datetime.now(UTC)


async def start_staff_session(staff: StaffMember, ttl: timedelta) -> tuple[str, Session]:
    token, token_hash = new_token()
    session = await Session.create(
        token_hash=token_hash, firm_id=staff.firm_id, staff_member=staff, expires_at=now() + ttl
    )
    return token, session


async def start_client_session(
    user: PortalUser, ttl: timedelta, current_account_id: int | None
) -> tuple[str, Session]:
    token, token_hash = new_token()
    session = await Session.create(
        token_hash=token_hash,
        firm_id=user.firm_id,
        portal_user=user,
        current_account_id=current_account_id,
        expires_at=now() + ttl,
    )
    return token, session


def _is_live(session: Session, at: datetime) -> bool:
    """Not revoked nor expired, and its staff member active (or of a portal user)."""
    if session.revoked_at is not None or session.expires_at <= at:
        return False
    return session.portal_user_id is not None or (
        session.staff_member is not None and session.staff_member.active
    )


async def resolve_session(token: str | None) -> Session | None:
    """The live session for a token, with its staff member or portal user and its firm
    (its settings decide what a viewer reads: private mail); one query."""
    if not token or len(token) > 256:
        return None
    [found] = await _sessions_by_token([token])
    return found


async def _sessions_by_token(tokens: Sequence[str]) -> list[Session | None]:
    hashes = {token: hash_token(token) for token in tokens}
    at = now()
    rows = await session_rows.sessions_with_people(sorted(set(hashes.values())))
    found = {row.token_hash: row for row in rows if _is_live(row, at)}
    return [found.get(hashes[token]) for token in tokens]


_shared_sessions = Coalesced(_sessions_by_token)


async def resolve_session_shared(token: str | None) -> Session | None:
    """As `resolve_session`, but lookups made at the same moment share one query (one event
    fanned out to many WebSocket subscribers). Callers that see the same token get the same
    row: read it, never change it."""
    if not token or len(token) > 256:
        return None
    return await _shared_sessions.load(token)


async def revoke(session: Session) -> None:
    await Session.filter(pk=session.pk).update(revoked_at=now())


async def revoke_all_for_staff(staff_id: int) -> int:
    return await Session.filter(staff_member_id=staff_id, revoked_at=None).update(revoked_at=now())
