"""Deleting an account: it goes with everything that is only its own.

Goes: the account, its contact links, toggles (AccountEmail), invitations (their queued mail,
and all portal mail still queued for it, is withdrawn), portal access, documents, message links,
and the synced mail linked to no other account (with its attachments). Contents of files go
after the commit when nothing else refers to them.
Stays: contacts and their addresses (they may be in other accounts), mail also linked to
another account, and delivery records (their account becomes null). The account's own audit
entries go with it (the foreign key cascades); one ACCOUNT_DELETED entry without an account
records what was deleted.
"""

from __future__ import annotations

from tortoise.expressions import Subquery
from tortoise.transactions import in_transaction

from models import (
    Account,
    AccountContact,
    Document,
    Invitation,
    MessageAccount,
    PortalAccess,
    StaffMember,
)
from portico.settings import Settings
from services.crm.archive import cancel_queued_mail
from services.mail import removal as mail_removal
from services.portal import documents
from services.shared import audit, files
from services.shared.scope import FirmScope

REASON = "account deleted"


async def delete_account(
    scope: FirmScope, staff: StaffMember | None, account_id: int | None, settings: Settings
) -> Account:
    """Deletes the account in one transaction; returns it as it was."""
    account = await scope.get(Account, account_id, "id")
    async with in_transaction():
        # Its queued portal mail (invitations too) is withdrawn; the invitations themselves
        # go with the account below, so no link of it works any more.
        withdrawn = await cancel_queued_mail(scope, account.pk)
        document_ids = await (
            scope.query(Document).filter(account_id=account.pk).values_list("id", flat=True)
        )
        sha256s = set(
            await documents.delete_documents(scope, document_ids, staff=staff, reason=REASON)
        )
        only_here = await _mail_only_in(scope, account.pk)
        sha256s |= await mail_removal.delete_messages(
            scope, only_here, settings, forget_files=False
        )
        await audit.record(
            scope,
            "ACCOUNT_DELETED",
            account_id=None,  # the account's own entries go with it
            staff=staff,
            before={
                "account": account.pk,
                "name": account.name,
                "contacts": await scope.query(AccountContact).filter(account_id=account.pk).count(),
                "portalAccesses": await scope.query(PortalAccess)
                .filter(account_id=account.pk)
                .count(),
                "documents": len(document_ids),
                "messagesDeleted": len(only_here),
                "queuedMailWithdrawn": withdrawn,
            },
        )
        # Invitations first: deleted by the account's cascade, PostgreSQL would set both of a
        # delivery row's references (invitation, account) to null at once and fail the check.
        await scope.query(Invitation).filter(account_id=account.pk).delete()
        # Links, toggles, portal access and message links go with it (CASCADE).
        await scope.query(Account).filter(pk=account.pk).delete()
    await files.forget(settings, sha256s)  # after the commit: a rollback keeps the files
    return account


async def _mail_only_in(scope: FirmScope, account_id: int) -> list[int]:
    """The messages linked to this account and to no other."""
    linked = scope.query(MessageAccount).filter(account_id=account_id)
    elsewhere = (
        scope.query(MessageAccount)
        .filter(message_id__in=Subquery(linked.values("message_id")))
        .exclude(account_id=account_id)
    )
    return sorted(
        set(await linked.values_list("message_id", flat=True))
        - set(await elsewhere.values_list("message_id", flat=True))
    )
