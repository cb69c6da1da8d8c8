"""EMAIL SYNC: the firm's connected mailboxes, their per-folder cursors, synced messages and
the accounts each message belongs to."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from models.crm import Account
from models.firms import Firm, StaffMember


class SyncStatus(StrEnum):
    IDLE = "IDLE"
    SYNCING = "SYNCING"
    FAILED = "FAILED"


class Mailbox(Model):
    """An IMAP/SMTP mailbox of the firm. The password is stored encrypted, never returned."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="mailboxes", on_delete=fields.CASCADE
    )
    firm_id: int
    address = fields.CharField(max_length=254)
    address_normalized = fields.CharField(max_length=254)
    imap_host = fields.CharField(max_length=255)
    imap_port = fields.IntField()
    imap_tls = fields.BooleanField(default=True)
    smtp_host = fields.CharField(max_length=255)
    smtp_port = fields.IntField()
    smtp_tls = fields.BooleanField(default=True)
    username = fields.CharField(max_length=255)
    password_encrypted = fields.TextField()
    sync_status = fields.CharEnumField(SyncStatus, max_length=16, default=SyncStatus.IDLE)
    last_synced_at = fields.DatetimeField(null=True)
    last_error = fields.TextField(null=True)
    lease_until = fields.DatetimeField(null=True, description="a worker is syncing it")
    created_by: fields.ForeignKeyNullableRelation[StaffMember] = fields.ForeignKeyField(
        "portico.StaffMember", related_name="mailboxes", null=True, on_delete=fields.SET_NULL
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "mailbox"
        unique_together = (("firm", "address_normalized"),)


class MailboxFolder(Model):
    """Where the sync of one folder stands: UIDVALIDITY and the last UID seen."""

    id = fields.IntField(primary_key=True)
    mailbox: fields.ForeignKeyRelation[Mailbox] = fields.ForeignKeyField(
        "portico.Mailbox", related_name="folders", on_delete=fields.CASCADE
    )
    mailbox_id: int
    name = fields.CharField(max_length=255)
    role = fields.CharField(max_length=16, description="INBOX or SENT")
    uidvalidity = fields.BigIntField(null=True)
    last_uid = fields.BigIntField(default=0)
    highest_modseq = fields.BigIntField(null=True)

    class Meta:
        table = "mailbox_folder"
        unique_together = (("mailbox", "name"),)


class Message(Model):
    """A synced (or sent) message, stored once per firm and found again by its Message-ID."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="messages", on_delete=fields.CASCADE
    )
    firm_id: int
    message_id = fields.CharField(max_length=998, description="the header, or a stable hash")
    message_key = fields.CharField(max_length=64, description="SHA-256 of message_id")
    thread_key = fields.CharField(max_length=64, db_index=True)
    subject = fields.TextField()
    from_address = fields.CharField(max_length=254)
    to_addresses = fields.JSONField(default=list)
    cc_addresses = fields.JSONField(default=list)
    sent_at = fields.DatetimeField()
    text_body = fields.TextField(null=True)
    html_body = fields.TextField(null=True, description="as received, sanitized when read")
    direction = fields.CharField(max_length=8, description="INBOUND or OUTBOUND")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "message"
        unique_together = (("firm", "message_key"),)
        indexes = (("firm_id", "sent_at", "id"),)


class MessageAccount(Model):
    """A message shows in an account's Email tab (a participant has EMAIL SYNC on there)."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="message_accounts", on_delete=fields.CASCADE
    )
    firm_id: int
    message: fields.ForeignKeyRelation[Message] = fields.ForeignKeyField(
        "portico.Message", related_name="account_links", on_delete=fields.CASCADE
    )
    message_id: int
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "portico.Account", related_name="message_links", on_delete=fields.CASCADE, db_index=True
    )
    account_id: int
    sent_at = fields.DatetimeField(description="copied from the message: the Email tab sorts by it")

    class Meta:
        table = "message_account"
        unique_together = (("message", "account"),)
        indexes = (("account_id", "sent_at", "message_id"),)
