"""The toggles and portal access: LOGIN's rules (domain.md, "LOGIN").

PortalAccess rows are the one source of truth for who may enter an account; LOGIN off and
removePortalAccess delete them, so the next request of that client already lacks access.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tortoise.transactions import in_transaction

from models import Account, AccountEmail, EmailAddress, PortalAccess, PortalUser, StaffMember
from portico.settings import Settings
from services.mail import history
from services.portal import invitations
from services.shared import audit, sql
from services.shared.errors import ErrorCode, input_error
from services.shared.permissions import require_manage_accounts
from services.shared.scope import FirmScope
from services.shared.wakeups import HISTORY
from services.webhooks import emit

NO_ACCESS = "NO_ACCESS"
PENDING_ACTIVATION = "PENDING_ACTIVATION"
ACTIVE = "ACTIVE"


@dataclass(frozen=True)
class FlagChanges:
    login: bool | None = None
    notify: bool | None = None
    email_sync: bool | None = None


def _flags(row: AccountEmail) -> dict[str, bool]:
    return {"login": row.login, "notify": row.notify, "emailSync": row.email_sync}


async def set_email_flags(
    scope: FirmScope,
    staff: StaffMember,
    account_email_id: int | None,
    changes: FlagChanges,
    settings: Settings,
    *,
    send_invitation: bool,
) -> AccountEmail:
    """Flips the toggles of one (account, address). EMAIL SYNC going on queues the import of
    the address's earlier mail from every mailbox of the firm, in the same transaction."""
    queued = 0
    async with in_transaction():
        row = await _account_email(scope, account_email_id, "input", "accountEmailId")
        before = _flags(row)
        for attr in ("login", "notify", "email_sync"):
            value = getattr(changes, attr)
            if value is not None:
                setattr(row, attr, value)
        after = _flags(row)
        if after == before:
            return row
        await row.save(update_fields=["login", "notify", "email_sync"])
        await audit.record(
            scope,
            "FLAGS_CHANGED",
            account_id=row.account_id,
            email=row.email_address.address,
            staff=staff,
            before=before,
            after=after,
        )
        await emit.email_flags_changed(row, row.email_address.address, before, after)
        if row.login and not before["login"] and not await _activated(scope, row):
            await invitations.invite(scope, row, settings, send=send_invitation, staff=staff)
        elif before["login"] and not row.login:
            await _end_login(scope, row, staff)
        if row.email_sync and not before["emailSync"]:
            queued = await history.queue(scope, [row.email_address.address_normalized])
    if queued:
        HISTORY.notify()  # after the commit, so the background loop finds the rows
    return row


async def resend_invitation(
    scope: FirmScope, staff: StaffMember, account_email_id: int | None, settings: Settings
) -> invitations.Invitation:
    async with in_transaction():
        row = await _account_email(scope, account_email_id, "accountEmailId")
        if not row.login:
            raise input_error(
                ErrorCode.LOGIN_OFF, "Turn LOGIN on for this address first.", "accountEmailId"
            )
        return await invitations.invite(scope, row, settings, send=True, staff=staff)


async def remove_portal_access(
    scope: FirmScope, staff: StaffMember, portal_access_id: int | None
) -> Account:
    """LOGIN off for an unlinked email: the user loses access to the account."""
    async with in_transaction():
        access = await scope.get(PortalAccess, portal_access_id, "portalAccessId")
        user = await PortalUser.get(pk=access.portal_user_id)
        await access.delete()
        await audit.record(
            scope,
            "PORTAL_ACCESS_REMOVED",
            account_id=access.account_id,
            email=user.email,
            staff=staff,
            before={"portalUser": user.pk},
        )
        await emit.portal_access_revoked(
            scope.firm_id, access.account_id, [(user.pk, user.email)], emit.ACCESS_REMOVED
        )
        return await Account.get(pk=access.account_id)


async def _end_login(scope: FirmScope, row: AccountEmail, staff: StaffMember | None) -> None:
    """LOGIN off: pending invitations die, and this person's access to this account ends."""
    await invitations.revoke_pending(scope, [row.pk], staff=staff, reason="LOGIN off")
    removed = await scope.query(PortalAccess).filter(
        account_id=row.account_id,
        portal_user__email_normalized=row.email_address.address_normalized,
    )
    for access in removed:
        await access.delete()
        await audit.record(
            scope,
            "PORTAL_ACCESS_REMOVED",
            account_id=row.account_id,
            email=row.email_address.address,
            staff=staff,
            before={"portalUser": access.portal_user_id},
        )
    address = row.email_address.address
    await emit.portal_access_revoked(
        scope.firm_id,
        row.account_id,
        [(a.portal_user_id, address) for a in removed],
        emit.LOGIN_TURNED_OFF,
    )


async def _activated(scope: FirmScope, row: AccountEmail) -> bool:
    """Whether the address's owner already has access (no invitation is needed then)."""
    pair = (row.account_id, row.email_address.address_normalized)
    return pair in await activated_pairs(scope, [pair])


async def _account_email(scope: FirmScope, pk: int | None, *field: str) -> AccountEmail:
    # Locked (PostgreSQL) for the transaction: two LOGIN-on requests cannot both invite.
    row = await scope.query(AccountEmail).filter(pk=pk).select_for_update().first()
    if row is not None:
        await row.fetch_related("email_address")
    if pk is None or row is None:
        raise input_error(ErrorCode.NOT_FOUND, "No such account email.", *field)
    return row


# Hooks called by services/crm/records.py inside its transactions


async def address_changed(
    scope: FirmScope, email: EmailAddress, staff: StaffMember | None, settings: Settings
) -> None:
    """The address of `email` changed: old links die; where LOGIN is on, a new one is sent
    (not in archived accounts).
    Where EMAIL SYNC is on, it is now on for the new address: its earlier mail is queued for
    import (the caller notifies wakeups.HISTORY after its transaction commits)."""
    rows = await (
        scope.query(AccountEmail).filter(email_address_id=email.pk).select_related("account")
    )
    if any(row.email_sync for row in rows):
        await history.queue(scope, [email.address_normalized])
    await invitations.revoke_for_address_change(scope, [r.pk for r in rows], staff)
    for row in rows:
        row.email_address = email
        archived = row.account.archived_at is not None  # no mail goes to an archived account
        if row.login and not archived and not await _activated(scope, row):
            await invitations.invite(scope, row, settings, send=True, staff=staff)


async def rows_leaving(
    scope: FirmScope, account_email_ids: Iterable[int], staff: StaffMember | None, reason: str
) -> None:
    """AccountEmail rows about to be deleted (address removed, contact unlinked)."""
    await invitations.revoke_pending(scope, account_email_ids, staff=staff, reason=reason)


# Reading access


async def client_account_ids(user_id: int) -> list[int]:
    """The accounts a portal user may enter now, by account name. Archived accounts are
    closed: their PortalAccess rows stay, so unarchiving opens them again."""
    return list(
        await PortalAccess.filter(portal_user_id=user_id, account__archived_at=None)
        .order_by("account__name", "account_id")
        .values_list("account_id", flat=True)
    )


def portal_status(login: bool, activated: bool) -> str:
    """PENDING_ACTIVATION until the invitee has accepted; derived, never stored."""
    if not login:
        return NO_ACCESS
    return ACTIVE if activated else PENDING_ACTIVATION


async def activated_pairs(
    scope: FirmScope, pairs: Iterable[tuple[int, str]]
) -> set[tuple[int, str]]:
    """Which (account id, normalized address) pairs have a portal user with access."""
    pairs = list(pairs)
    if not pairs:
        return set()
    # Hand-written (services/shared/sql.py): every account screen asks (portalStatus), and
    # Tortoise rebuilt this join for each request. The statement it made, as rows.
    accounts = list({a for a, _ in pairs})
    addresses = list({e for _, e in pairs})
    rows = await sql.select(
        "SELECT pa.account_id, u.email_normalized FROM portal_access pa"
        " JOIN portal_user u ON u.id = pa.portal_user_id"
        f" WHERE pa.firm_id = ? AND pa.account_id IN ({sql.marks(len(accounts))})"
        f" AND u.email_normalized IN ({sql.marks(len(addresses))})",
        [scope.firm_id, *accounts, *addresses],
    )
    return {(row[0], row[1]) for row in rows} & set(pairs)


async def accesses_by_account(
    scope: FirmScope, account_ids: Iterable[int]
) -> dict[int, list[tuple[PortalAccess, bool]]]:
    """Each account's portal accesses, with whether the user's address is still on a
    linked contact (False: it shows under the account's unlinked emails)."""
    account_ids = list(account_ids)
    accesses = (
        await scope.query(PortalAccess)
        .filter(account_id__in=account_ids)
        .select_related("portal_user")
        .order_by("id")
    )
    linked = set(
        await scope.query(AccountEmail)
        .filter(account_id__in=account_ids)
        .values_list("account_id", "email_address__address_normalized")
    )
    result: dict[int, list[tuple[PortalAccess, bool]]] = {a: [] for a in account_ids}
    for row in accesses:
        pair = (row.account_id, row.portal_user.email_normalized)
        result[row.account_id].append((row, pair in linked))
    return result


async def set_notification_preferences(
    scope: FirmScope,
    account_email_id: int | None,
    *,
    notify_all: bool,
    categories: list[str],
    staff: StaffMember | None = None,
    client: tuple[PortalUser, int | None] | None = None,
) -> AccountEmail:
    """Staff with the manage-accounts right, or a client for their own address in the
    account they are in (given as (portal user, current account id))."""
    if staff is not None:
        require_manage_accounts(staff)
    async with in_transaction():
        row = await _account_email(scope, account_email_id, "input", "accountEmailId")
        if client is not None:
            user, current = client
            own = row.email_address.address_normalized == user.email_normalized
            if row.account_id != current or not own:
                raise input_error(
                    ErrorCode.NOT_FOUND, "No such account email.", "input", "accountEmailId"
                )
        before = {"all": row.notify_all, "enabled": row.notify_categories}
        row.notify_all = notify_all
        row.notify_categories = sorted(set(categories))
        await row.save(update_fields=["notify_all", "notify_categories"])
        await audit.record(
            scope,
            "NOTIFICATION_PREFERENCES_CHANGED",
            account_id=row.account_id,
            email=row.email_address.address,
            staff=staff,
            portal_user=client[0] if client else None,
            before=before,
            after={"all": row.notify_all, "enabled": row.notify_categories},
        )
    return row
