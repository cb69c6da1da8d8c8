"""Invitations: single-use, expiring links that turn LOGIN on into portal access.

An invitation is bound to the address it was sent to: any change of that address, of the
contact's link, or LOGIN going off revokes it. Its status is derived from its timestamps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.transactions import in_transaction

from models import Account, AccountEmail, Firm, Invitation, PortalAccess, PortalUser, StaffMember
from portico.settings import Settings
from services.outbound import outbox
from services.shared import audit, passwords, tokens
from services.shared.errors import ErrorCode, input_error
from services.shared.scope import FirmScope
from services.shared.sessions import now
from services.webhooks import emit


class Status:
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


def status_of(invitation: Invitation, at: datetime | None = None) -> str:
    status = tokens.link_status(
        invitation.accepted_at, invitation.revoked_at, invitation.expires_at, at or now()
    )
    return Status.ACCEPTED if status == tokens.USED else status


def link(settings: Settings, token: str) -> str:
    return f"{settings.resolved_portal_url}/invitation?token={token}"


async def invite(
    scope: FirmScope,
    account_email: AccountEmail,
    settings: Settings,
    *,
    send: bool,
    staff: StaffMember | None,
) -> Invitation:
    """A new invitation for this (account, address), superseding pending ones; call inside a
    transaction. With `send`, the email is queued in the same transaction. An archived
    account gets none (ACCOUNT_ARCHIVED): no mail goes to it, and its portal is closed."""
    address = account_email.email_address
    account = await Account.get(pk=account_email.account_id)
    if account.archived_at is not None:
        raise input_error(
            ErrorCode.ACCOUNT_ARCHIVED,
            "The account is archived: unarchive it before inviting anyone.",
        )
    await revoke_pending(scope, [account_email.pk], staff=staff, reason="superseded")
    invitation, token = await _create(scope, account_email, settings)
    if send:
        await _send(scope, invitation, token, account, settings)
        await emit.invitation_sent(invitation)
    await audit.record(
        scope,
        "INVITATION_SENT" if send else "INVITATION_CREATED",
        account_id=account_email.account_id,
        email=address.address,
        staff=staff,
        after={"invitation": invitation.pk, "expiresAt": invitation.expires_at.isoformat()},
    )
    return invitation


async def banner_link(scope: FirmScope, account_email: AccountEmail, settings: Settings) -> str:
    """A working activation link for a notification's banner. It does not supersede the
    mailed invitation (both stay usable), but every revocation rule applies to it."""
    _, token = await _create(scope, account_email, settings)
    return link(settings, token)


async def _create(
    scope: FirmScope, account_email: AccountEmail, settings: Settings
) -> tuple[Invitation, str]:
    address = account_email.email_address
    token, token_hash = tokens.new_token()
    invitation = await Invitation.create(
        firm_id=scope.firm_id,
        account_id=account_email.account_id,
        account_email=account_email,
        email=address.address,
        email_normalized=address.address_normalized,
        token_hash=token_hash,
        expires_at=now() + timedelta(hours=settings.invitation_ttl_hours),
    )
    return invitation, token


async def _send(
    scope: FirmScope, invitation: Invitation, token: str, account: Account, settings: Settings
) -> None:
    firm = await Firm.get(pk=scope.firm_id)
    await outbox.enqueue(
        firm_id=firm.pk,
        firm_name=firm.name,
        to=invitation.email,
        template="invitation",
        context={
            "firm_name": firm.name,
            "account_name": account.name,
            "link": link(settings, token),
            "expires_at": invitation.expires_at,
        },
        kind="INVITATION",
        settings=settings,
        account_id=account.pk,
        invitation_id=invitation.pk,
    )
    invitation.sent_at = now()
    await invitation.save(update_fields=["sent_at"])


async def revoke_pending(
    scope: FirmScope,
    account_email_ids: Iterable[int],
    *,
    staff: StaffMember | None,
    reason: str,
) -> int:
    """Revokes the pending invitations of these AccountEmail rows; returns how many."""
    pending = await scope.query(Invitation).filter(
        account_email_id__in=list(account_email_ids),
        accepted_at=None,
        revoked_at=None,
        expires_at__gt=now(),
    )
    # The link dies, and so does its mail if no worker has taken it yet.
    await outbox.cancel_invitation_mail([i.pk for i in pending])
    for invitation in pending:
        invitation.revoked_at = now()
        await invitation.save(update_fields=["revoked_at"])
        await audit.record(
            scope,
            "INVITATION_REVOKED",
            account_id=invitation.account_id,
            email=invitation.email,
            staff=staff,
            before={"invitation": invitation.pk},
            after={"reason": reason},
        )
    return len(pending)


async def revoke_for_address_change(
    scope: FirmScope, account_email_ids: Iterable[int], staff: StaffMember | None
) -> int:
    """The rule "an address changed before acceptance revokes the invitation": a link is bound
    to the address it was sent to, so a pending one dies when that address is edited."""
    return await revoke_pending(scope, account_email_ids, staff=staff, reason="address changed")


@dataclass(frozen=True)
class Accepted:
    portal_user: PortalUser
    account_id: int


async def accept(token: str, password: str | None) -> Accepted:
    """Activates an invitation: creates (or reuses) the portal user and grants access."""
    invitation = await Invitation.get_or_none(token_hash=tokens.hash_token(token or ""))
    if invitation is None:
        raise input_error(
            ErrorCode.INVITATION_INVALID, "This invitation link is not valid.", "token"
        )
    status = status_of(invitation)
    if status != Status.PENDING:
        raise input_error(*_REFUSALS[status], "token")
    scope = FirmScope(invitation.firm_id)
    user = await scope.query(PortalUser).get_or_none(email_normalized=invitation.email_normalized)
    password_hash = None
    if user is None:
        passwords.check_strength(password or "", "password")
        password_hash = await passwords.hash_password(password or "")
    async with in_transaction():
        # Single use even under a race: only one request flips accepted_at.
        claimed = await Invitation.filter(
            pk=invitation.pk, accepted_at=None, revoked_at=None
        ).update(accepted_at=now())
        if not claimed:
            # Lost to another accept or to a revocation: say which, as a fresh read shows.
            await invitation.refresh_from_db(fields=["accepted_at", "revoked_at"])
            lost_to = status_of(invitation)
            raise input_error(*_REFUSALS.get(lost_to, _REFUSALS[Status.ACCEPTED]), "token")
        if user is None:
            # get_or_create: two invitations of a new user accepted at the same moment.
            user, _ = await PortalUser.get_or_create(
                firm_id=invitation.firm_id,
                email_normalized=invitation.email_normalized,
                defaults={
                    "email": invitation.email,
                    "password_hash": password_hash,
                    "activated_at": now(),
                },
            )
        await PortalAccess.get_or_create(
            firm_id=invitation.firm_id, account_id=invitation.account_id, portal_user=user
        )
        await audit.record(
            scope,
            "INVITATION_ACCEPTED",
            account_id=invitation.account_id,
            email=invitation.email,
            portal_user=user,
            after={"invitation": invitation.pk, "portalUser": user.pk},
        )
        await emit.invitation_accepted(invitation, user)
    return Accepted(user, invitation.account_id)


_REFUSALS = {
    Status.ACCEPTED: (
        ErrorCode.INVITATION_USED,
        "This invitation has been used already. Sign in instead.",
    ),
    Status.REVOKED: (
        ErrorCode.INVITATION_REVOKED,
        "This invitation was withdrawn. Ask the firm to send a new one.",
    ),
    Status.EXPIRED: (
        ErrorCode.INVITATION_EXPIRED,
        "This invitation has expired. Ask the firm for a new one.",
    ),
}


async def check(token: str) -> tuple[str, Invitation | None]:
    """The status of a token (INVALID for unknown ones), for the invitation page."""
    invitation = await Invitation.get_or_none(token_hash=tokens.hash_token(token or ""))
    return (status_of(invitation), invitation) if invitation else ("INVALID", None)


def refusal(status: str) -> str:
    """The plain sentence the invitation page shows for a link that cannot be used."""
    return _REFUSALS.get(status, ("", "This invitation link is not valid."))[1]
