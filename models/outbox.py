"""Outgoing mail: the transactional outbox that workers deliver from."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

from models.crm import Account
from models.firms import Firm

if TYPE_CHECKING:
    from models.access import Invitation
    from models.mail import Mailbox, Message


class DeliveryStatus(StrEnum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"  # withdrawn before a worker sent it (a revoked invitation)


class Mailing(Model):
    """One sendFirmEmail: its rows in the outbox say how far it has gone (progress)."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="mailings", on_delete=fields.CASCADE
    )
    firm_id: int
    kind = fields.CharField(max_length=32)
    subject = fields.CharField(max_length=998)
    total = fields.IntField(default=0, description="messages queued for it")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "mailing"
        indexes = (("firm_id", "created_at"),)


class OutboundEmail(Model):
    """One message to one recipient, written in the transaction of the change that caused it.

    The bodies are rendered when the row is written and stored encrypted (they may carry a
    single-use link); workers claim QUEUED rows whose next_attempt_at has come, under a lease.
    """

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="outbound_emails", on_delete=fields.CASCADE
    )
    firm_id: int
    account: fields.ForeignKeyNullableRelation[Account] = fields.ForeignKeyField(
        "portico.Account",
        related_name="outbound_emails",
        null=True,
        on_delete=fields.SET_NULL,
        db_index=True,
    )
    account_id: int | None
    invitation: fields.ForeignKeyNullableRelation[Invitation] = fields.ForeignKeyField(
        "portico.Invitation",
        related_name="outbound_emails",
        null=True,
        on_delete=fields.SET_NULL,
        db_index=True,
    )
    invitation_id: int | None
    kind = fields.CharField(max_length=32)
    category = fields.CharField(max_length=32, null=True)
    to_address = fields.CharField(max_length=254)
    from_name = fields.CharField(max_length=200)
    subject = fields.CharField(max_length=998)
    body_encrypted = fields.TextField()
    message_id = fields.CharField(max_length=255, unique=True)
    status = fields.CharEnumField(DeliveryStatus, max_length=16, default=DeliveryStatus.QUEUED)
    attempts = fields.IntField(default=0)
    last_error = fields.TextField(null=True)
    next_attempt_at = fields.DatetimeField()
    # 0 first: mail a person waits for at a sign-in (services/outbound/outbox.PRIORITY).
    priority = fields.SmallIntField(default=1, db_default=1, description="lower is sent first")
    lease_until = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    sent_at = fields.DatetimeField(null=True)
    # A reply from Inbox+: sent through this mailbox's SMTP server and filed in its Sent folder.
    mailbox: fields.ForeignKeyNullableRelation[Mailbox] = fields.ForeignKeyField(
        "portico.Mailbox", related_name="outbound_emails", null=True, on_delete=fields.SET_NULL
    )
    mailbox_id: int | None
    thread_message: fields.ForeignKeyNullableRelation[Message] = fields.ForeignKeyField(
        "portico.Message",
        related_name="outbound_emails",
        null=True,
        on_delete=fields.SET_NULL,
        db_index=True,  # a reply's delivery, read beside its message
    )
    thread_message_id: int | None
    mailing: fields.ForeignKeyNullableRelation[Mailing] = fields.ForeignKeyField(
        "portico.Mailing",
        related_name="outbound_emails",
        null=True,
        on_delete=fields.SET_NULL,
        db_index=True,
    )
    mailing_id: int | None
    headers = fields.JSONField(null=True, description="extra headers such as In-Reply-To")
    filed_at = fields.DatetimeField(null=True, description="copy appended to the Sent folder")

    class Meta:
        table = "outbound_email"
        # Due rows for the workers, urgent first (the claim's order, services/loops/delivery);
        # failed replies for Inbox+ (inbox(deliveryStatus:)).
        indexes = (
            ("status", "next_attempt_at"),
            ("status", "priority", "next_attempt_at", "id"),
            ("firm_id", "status", "thread_message_id"),
        )
