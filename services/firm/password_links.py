"""A new staff member's first password, set through a single-use link sent by mail.

The same rules as invitations: 256 random bits, only the hash stored, single use, expiring
after PORTICO_PASSWORD_LINK_TTL_HOURS, and a newer link revokes older ones.
"""

from __future__ import annotations

from datetime import timedelta

from tortoise.transactions import in_transaction

from models import Firm, PasswordLink, StaffMember
from portico.settings import Settings
from services.outbound import outbox
from services.shared import passwords, tokens
from services.shared.errors import ErrorCode, input_error
from services.shared.sessions import now

REFUSALS = {
    tokens.USED: (ErrorCode.LINK_USED, "This link has been used already. Sign in instead."),
    tokens.REVOKED: (ErrorCode.LINK_REVOKED, "A newer link was sent; use that one."),
    tokens.EXPIRED: (
        ErrorCode.LINK_EXPIRED,
        "This link has expired. Ask an owner or admin for a new one.",
    ),
    "INVALID": (ErrorCode.LINK_INVALID, "This link is not valid."),
}


def link(settings: Settings, token: str) -> str:
    return f"{settings.resolved_public_url}/password?token={token}"


async def issue(member: StaffMember, settings: Settings) -> PasswordLink:
    """A fresh link for `member`, mailed in the caller's transaction; older links die."""
    await PasswordLink.filter(staff_member_id=member.pk, used_at=None, revoked_at=None).update(
        revoked_at=now()
    )
    token, token_hash = tokens.new_token()
    row = await PasswordLink.create(
        firm_id=member.firm_id,
        staff_member=member,
        token_hash=token_hash,
        expires_at=now() + timedelta(hours=settings.password_link_ttl_hours),
    )
    firm = await Firm.get(pk=member.firm_id)
    await outbox.enqueue(
        firm_id=firm.pk,
        firm_name=firm.name,
        to=member.email,
        template="staff_password",
        context={
            "firm_name": firm.name,
            "member_name": member.name,
            "link": link(settings, token),
            "expires_at": row.expires_at,
        },
        kind="STAFF_ONBOARDING",
        settings=settings,
    )
    return row


async def check(token: str) -> str:
    row = await PasswordLink.get_or_none(token_hash=tokens.hash_token(token or ""))
    if row is None:
        return "INVALID"
    return tokens.link_status(row.used_at, row.revoked_at, row.expires_at, now())


async def redeem(token: str, password: str) -> StaffMember:
    """Sets the member's password from a pending link (once)."""
    row = await PasswordLink.get_or_none(token_hash=tokens.hash_token(token or ""))
    status = (
        tokens.link_status(row.used_at, row.revoked_at, row.expires_at, now()) if row else "INVALID"
    )
    if row is None or status != tokens.PENDING:
        raise input_error(*REFUSALS[status], "token")
    passwords.check_strength(password, "password")
    password_hash = await passwords.hash_password(password)
    async with in_transaction():
        claimed = await PasswordLink.filter(pk=row.pk, used_at=None, revoked_at=None).update(
            used_at=now()
        )
        if not claimed:
            raise input_error(*REFUSALS[tokens.USED], "token")
        member = await StaffMember.get(pk=row.staff_member_id)
        if not member.active:
            raise input_error(*REFUSALS["INVALID"], "token")
        member.password_hash = password_hash
        await member.save(update_fields=["password_hash"])
    return member
