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
    Message,
    MessageAccount,
    PortalAccess,
    StaffMember,
)
from portico.settings import Settings
from services.mail import removal as mail_removal
from services.outbound import outbox
from services.portal import documents
from services.shared import audit, files
from services.shared.scope import FirmScope
from services.webhooks import emit


async def delete_account(
    scope: FirmScope, staff: StaffMember | None, account_id: int | None, settings: Settings
) -> Account:
    """Deletes the account in one transaction; returns it as it was."""
    account = await scope.get(Account, account_id, "id")
    async with in_transaction():
        # Its queued portal mail (invitations too) is withdrawn; the invitations themselves
        # go with the account below, so no link of it works any more.
        withdrawn = await outbox.cancel_account_mail(scope, account.pk)
        document_ids = await (
            scope.query(Document).filter(account_id=account.pk).values_list("id", flat=True)
        )
        # No DOCUMENT_DELETED entries: they would name this account and go with it at once;
        # ACCOUNT_DELETED below records the count.
        sha256s = set(
            await documents.delete_documents(scope, document_ids, staff=staff, audit_each=False)
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
        await _announce_access_ending(scope, account.pk)
        # Invitations first: left to the account's cascade, PostgreSQL's SET NULL of a
        # delivery row's account re-checks its invitation reference while that invitation is
        # being deleted by the same statement, and fails outbound_email_invitation_id_fkey.
        await scope.query(Invitation).filter(account_id=account.pk).delete()
        # Links, toggles, portal access and message links go with it (CASCADE).
        await scope.query(Account).filter(pk=account.pk).delete()
    await files.forget(settings, sha256s)  # after the commit: a rollback keeps the files
    return account


async def _announce_access_ending(scope: FirmScope, account_id: int) -> None:
    """portal_access.revoked for each client who could enter the account (its access rows
    go with it in the cascade)."""
    revoked = await (
        scope.query(PortalAccess)
        .filter(account_id=account_id)
        .order_by("id")
        .values_list("portal_user_id", "portal_user__email")
    )
    await emit.portal_access_revoked(scope.firm_id, account_id, revoked, emit.ACCOUNT_DELETED)


async def _mail_only_in(scope: FirmScope, account_id: int) -> list[int]:
    """The messages linked to this account and to no other; call it in the deleting
    transaction.

    The messages are locked first (FOR UPDATE on PostgreSQL): a sync pass linking one of them
    to another account meanwhile must take a key-share lock on it, so it either committed
    before the lock (and the check below, a new statement, sees its link) or waits until the
    delete commits (and then fails on the foreign key, as linking any just-deleted message
    would: its transaction rolls back, no link is lost silently). Without the lock the check
    could miss a link made after it, and deleting the message would take that link too.
    On SQLite this transaction already holds the one write lock (it has written): no sync
    write can come in between.
    """
    linked = scope.query(MessageAccount).filter(account_id=account_id).values("message_id")
    # Rows, not values_list: Tortoise leaves FOR UPDATE out of a values query.
    locked = scope.query(Message).filter(id__in=Subquery(linked)).select_for_update().only("id")
    candidates = {row.pk for row in await locked}
    elsewhere = (
        scope.query(MessageAccount)
        .filter(message_id__in=Subquery(linked))
        .exclude(account_id=account_id)
        .values_list("message_id", flat=True)
    )
    return sorted(candidates - set(await elsewhere))
