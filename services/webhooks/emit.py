"""Each webhook event's `data`, built in one place and queued (services/webhooks/queue) from
the service that makes the change, inside its transaction. docs/webhooks.md lists them.

Data carries ids (the API's global ids) and the few facts a receiver needs to route the
event, never message or document content: the receiver asks the API for the rest, with its
own access checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from models import AccountEmail, Document, Invitation, OutboundEmail, PortalUser
from services.webhooks.events import WebhookEvent
from services.webhooks.queue import emit, node_id, queue_for, receivers, timestamp


async def invitation_sent(invitation: Invitation) -> None:
    await emit(
        invitation.firm_id,
        WebhookEvent.INVITATION_SENT,
        [
            {
                "invitationId": node_id("Invitation", invitation.pk),
                "accountId": node_id("Account", invitation.account_id),
                "email": invitation.email,
                "expiresAt": timestamp(invitation.expires_at),
            }
        ],
    )


async def invitation_accepted(invitation: Invitation, user: PortalUser) -> None:
    await emit(
        invitation.firm_id,
        WebhookEvent.INVITATION_ACCEPTED,
        [
            {
                "invitationId": node_id("Invitation", invitation.pk),
                "accountId": node_id("Account", invitation.account_id),
                "portalUserId": node_id("PortalUser", user.pk),
                "email": invitation.email,
            }
        ],
    )


# Why portal access ended (portal_access.revoked's reason).
LOGIN_TURNED_OFF = "LOGIN_TURNED_OFF"  # staff turned LOGIN off for the address
ACCESS_REMOVED = "ACCESS_REMOVED"  # staff removed an unlinked address's access
ACCOUNT_DELETED = "ACCOUNT_DELETED"  # the account was deleted
CONTACT_ERASED = "CONTACT_ERASED"  # the person was erased (email: the stand-in address)


async def portal_access_revoked(
    firm_id: int, account_id: int, revoked: Iterable[tuple[int, str]], reason: str
) -> None:
    """`revoked`: (portal user id, address) pairs; `reason` one of the four above."""
    await emit(
        firm_id,
        WebhookEvent.PORTAL_ACCESS_REVOKED,
        [
            {
                "accountId": node_id("Account", account_id),
                "portalUserId": node_id("PortalUser", user_id),
                "email": email,
                "reason": reason,
            }
            for user_id, email in revoked
        ],
    )


async def email_flags_changed(
    row: AccountEmail, address: str, before: Mapping[str, bool], after: Mapping[str, bool]
) -> None:
    await emit(
        row.firm_id,
        WebhookEvent.EMAIL_FLAGS_CHANGED,
        [
            {
                "accountEmailId": node_id("AccountEmail", row.pk),
                "accountId": node_id("Account", row.account_id),
                "email": address,
                "before": dict(before),
                "after": dict(after),
            }
        ],
    )


async def delivery_failed(row: OutboundEmail, reason: str) -> None:
    """Mail to a client (a row with an account) given up for good."""
    if row.account_id is None:
        return
    await emit(
        row.firm_id,
        WebhookEvent.DELIVERY_FAILED,
        [
            {
                "deliveryId": node_id("Delivery", row.pk),
                "accountId": node_id("Account", row.account_id),
                "email": row.to_address,
                "kind": row.kind,
                "reason": reason,
            }
        ],
    )


async def messages_synced(
    firm_id: int, synced: Sequence[tuple[int, int | None, Sequence[int], str, datetime]]
) -> None:
    """`synced`: (message id, mailbox id, the accounts it was linked to now, direction, sent
    at) of each message stored or linked to accounts. As `emit`, with the events' data built
    only once an endpoint wants them (a sync's chunk is a thousand of them, mostly for none)."""
    linked = [item for item in synced if item[2]]
    wanted = await receivers(firm_id, WebhookEvent.MESSAGE_SYNCED) if linked else []
    if not wanted:
        return
    await queue_for(
        wanted,
        firm_id,
        WebhookEvent.MESSAGE_SYNCED,
        [
            {
                "messageId": node_id("Message", message_id),
                "mailboxId": node_id("Mailbox", mailbox_id) if mailbox_id else None,
                "accountIds": [node_id("Account", pk) for pk in account_ids],
                "direction": direction,
                "sentAt": timestamp(sent_at),
            }
            for message_id, mailbox_id, account_ids, direction, sent_at in linked
        ],
    )


async def document_uploaded(document: Document) -> None:
    """A document staff uploaded (uploadDocument)."""
    await emit(document.firm_id, WebhookEvent.DOCUMENT_UPLOADED, [_document(document, "STAFF")])


async def documents_saved_from_mail(firm_id: int, saved: Iterable[tuple[int, int]]) -> None:
    """Documents just saved from synced mail's attachments, as (account id, attachment id)
    pairs (bulk INSERTs give no ids: they are read back, only when an endpoint wants them)."""
    pairs = set(saved)
    wanted = await receivers(firm_id, WebhookEvent.DOCUMENT_UPLOADED) if pairs else []
    if not wanted:
        return
    rows = await Document.filter(
        firm_id=firm_id,
        account_id__in={account for account, _ in pairs},
        attachment_id__in={attachment for _, attachment in pairs},
    ).order_by("id")
    items = [_document(d, "MAIL") for d in rows if (d.account_id, d.attachment_id) in pairs]
    await queue_for(wanted, firm_id, WebhookEvent.DOCUMENT_UPLOADED, items)


def _document(document: Document, source: str) -> dict[str, object]:
    """`source`: STAFF (uploadDocument) or MAIL (an attachment saved from synced mail)."""
    return {
        "documentId": node_id("Document", document.pk),
        "accountId": node_id("Account", document.account_id),
        "filename": document.filename,
        "contentType": document.content_type,
        "size": document.size,
        "source": source,
    }


async def client_signed_in(user: PortalUser, account_ids: Sequence[int]) -> None:
    await emit(
        user.firm_id,
        WebhookEvent.CLIENT_SIGNED_IN,
        [
            {
                "portalUserId": node_id("PortalUser", user.pk),
                "email": user.email,
                "accountIds": [node_id("Account", pk) for pk in account_ids],
            }
        ],
    )
