"""Archiving an account: out of lists and the portal, no mail to it, nothing deleted.

Archived means `Account.archived_at` is set. What reads it: `records.accounts` (lists),
`portal.access.client_account_ids` (clients lose access at once; their PortalAccess rows
stay, so unarchiving gives it back), `portal.notify.recipients` (no notifications or firm
emails), `portal.invitations.invite` (ACCOUNT_ARCHIVED) and `mail.store.synced_accounts`
(sync links no new mail to it). Both verbs are idempotent.
"""

from __future__ import annotations

from tortoise.transactions import in_transaction

from models import Account, AccountEmail, StaffMember
from services.outbound import outbox
from services.portal import invitations
from services.shared import audit
from services.shared.scope import FirmScope
from services.shared.sessions import now


async def archive_account(
    scope: FirmScope, staff: StaffMember | None, account_id: int | None
) -> Account:
    """Archives the account (again: no change). Pending invitations are revoked and the
    portal mail still queued for it is withdrawn, so no mail reaches its clients."""
    account = await scope.get(Account, account_id, "id")
    async with in_transaction():
        # Conditional: of two parallel archives only one revokes and audits.
        claimed = await (
            scope.query(Account).filter(pk=account.pk, archived_at=None).update(archived_at=now())
        )
        if claimed:
            rows = await (
                scope.query(AccountEmail).filter(account_id=account.pk).values_list("id", flat=True)
            )
            await invitations.revoke_pending(scope, rows, staff=staff, reason="account archived")
            withdrawn = await outbox.cancel_account_mail(scope, account.pk)
            await audit.record(
                scope,
                "ACCOUNT_ARCHIVED",
                account_id=account.pk,
                staff=staff,
                after={"queuedMailWithdrawn": withdrawn},
            )
    await account.refresh_from_db(fields=["archived_at"])
    return account


async def unarchive_account(
    scope: FirmScope, staff: StaffMember | None, account_id: int | None
) -> Account:
    """Back in lists and the portal: clients with access may enter again at once. Revoked
    invitations stay revoked (resendInvitation sends new ones)."""
    account = await scope.get(Account, account_id, "id")
    async with in_transaction():
        claimed = await (
            scope.query(Account)
            .filter(pk=account.pk, archived_at__not_isnull=True)
            .update(archived_at=None)
        )
        if claimed:
            await audit.record(
                scope,
                "ACCOUNT_UNARCHIVED",
                account_id=account.pk,
                staff=staff,
                before={"archivedAt": account.archived_at.isoformat()}
                if account.archived_at
                else None,
            )
    await account.refresh_from_db(fields=["archived_at"])
    return account
