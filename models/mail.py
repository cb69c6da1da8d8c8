"""EMAIL SYNC: the firm's connected mailboxes, their per-folder cursors, synced messages and
the accounts each message belongs to."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from models.crm import Account
from models.firms import Firm, StaffMember


class MailboxVisibility(StrEnum):
    """Who reads a mailbox's mail: the whole firm, or (PERSONAL) its owner until a thread is
    shared."""

    SHARED = "SHARED"
    PERSONAL = "PERSONAL"


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
    sync_done = fields.IntField(default=0, description="messages the current or last pass read")
    sync_total = fields.IntField(
        null=True, description="messages the current or last pass had to read (null before one)"
    )
    created_by: fields.ForeignKeyNullableRelation[StaffMember] = fields.ForeignKeyField(
        "portico.StaffMember", related_name="mailboxes", null=True, on_delete=fields.SET_NULL
    )
    created_by_id: int | None
    visibility = fields.CharEnumField(
        MailboxVisibility,
        max_length=16,
        default=MailboxVisibility.SHARED,
        description="PERSONAL: private to created_by until a thread is shared",
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
    references = fields.JSONField(
        default=list, description="Message-IDs it answers, oldest first, for replies"
    )
    mailbox: fields.ForeignKeyNullableRelation[Mailbox] = fields.ForeignKeyField(
        "portico.Mailbox", related_name="messages", null=True, on_delete=fields.SET_NULL
    )
    mailbox_id: int | None
    sender_auth = fields.CharField(
        max_length=8,
        null=True,
        description="PASS or FAIL: DMARC as the receiving server of the firm reported it",
    )
    content_skipped = fields.TextField(
        null=True, description="why the body and attachments were not stored (too large)"
    )
    private_to: fields.ForeignKeyNullableRelation[StaffMember] = fields.ForeignKeyField(
        "portico.StaffMember",
        related_name="private_messages",
        null=True,
        on_delete=fields.CASCADE,
        description="the owner of the personal mailbox whose unshared thread holds it",
    )
    private_to_id: int | None
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "message"
        unique_together = (("firm", "message_key"),)
        indexes = (("firm_id", "sent_at", "id"),)


class SharedThread(Model):
    """A thread of a personal mailbox that its owner shared with the whole firm.

    Its mail, also mail arriving later, is readable by all staff with the inbox right."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="shared_threads", on_delete=fields.CASCADE
    )
    firm_id: int
    owner: fields.ForeignKeyRelation[StaffMember] = fields.ForeignKeyField(
        "portico.StaffMember", related_name="shared_threads", on_delete=fields.CASCADE
    )
    owner_id: int
    thread_key = fields.CharField(max_length=64)
    shared_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "shared_thread"
        unique_together = (("owner", "thread_key"),)


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


class Attachment(Model):
    """A file attached to a synced message, stored by content hash as documents are."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="attachments", on_delete=fields.CASCADE
    )
    firm_id: int
    message: fields.ForeignKeyRelation[Message] = fields.ForeignKeyField(
        "portico.Message", related_name="attachments", on_delete=fields.CASCADE
    )
    message_id: int
    position = fields.IntField(description="order within the message")
    filename = fields.CharField(max_length=255)
    content_type = fields.CharField(max_length=127)
    size = fields.BigIntField()
    sha256 = fields.CharField(max_length=64, null=True, description="null when not kept")
    skipped_reason = fields.TextField(null=True, description="why the content was not kept")

    class Meta:
        table = "attachment"
        unique_together = (("message", "position"),)


class MailboxSkip(Model):
    """A message that failed to fetch, parse or store: its attempts, then skipped for a while.

    Skipped (the rest of the folder syncs on) once it has failed too often, until retry_after."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="mailbox_skips", on_delete=fields.CASCADE
    )
    firm_id: int
    mailbox: fields.ForeignKeyRelation[Mailbox] = fields.ForeignKeyField(
        "portico.Mailbox", related_name="skips", on_delete=fields.CASCADE
    )
    mailbox_id: int
    folder = fields.CharField(max_length=255)
    uidvalidity = fields.BigIntField(null=True)
    uid = fields.BigIntField()
    reason = fields.TextField()
    attempts = fields.IntField(default=1)
    first_seen_at = fields.DatetimeField(auto_now_add=True)
    last_attempt_at = fields.DatetimeField()
    skipped_at = fields.DatetimeField(
        null=True, description="when it was given up on (null: not yet)"
    )
    retry_after = fields.DatetimeField(
        null=True, description="a skipped message is tried again then"
    )

    class Meta:
        table = "mailbox_skip"
        unique_together = (("mailbox", "folder", "uidvalidity", "uid"),)


class HistoryStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"


class HistoryImport(Model):
    """Earlier mail of one address to import from one mailbox (EMAIL SYNC turned on)."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="history_imports", on_delete=fields.CASCADE
    )
    firm_id: int
    mailbox: fields.ForeignKeyRelation[Mailbox] = fields.ForeignKeyField(
        "portico.Mailbox", related_name="history_imports", on_delete=fields.CASCADE
    )
    mailbox_id: int
    address_normalized = fields.CharField(max_length=254)
    status = fields.CharEnumField(HistoryStatus, max_length=16, default=HistoryStatus.PENDING)
    found = fields.IntField(default=0, description="messages the server matched")
    imported = fields.IntField(default=0, description="messages stored or linked")
    last_error = fields.TextField(null=True)
    lease_until = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "history_import"
        indexes = (("mailbox_id", "status"),)


class ClientMailNotice(Model):
    """New client mail synced live, once per account: what staff alerts and digests list."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="client_mail_notices", on_delete=fields.CASCADE
    )
    firm_id: int
    message: fields.ForeignKeyRelation[Message] = fields.ForeignKeyField(
        "portico.Message", related_name="notices", on_delete=fields.CASCADE
    )
    message_id: int
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "portico.Account", related_name="mail_notices", on_delete=fields.CASCADE
    )
    account_id: int
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "client_mail_notice"
        unique_together = (("message", "account"),)
        indexes = (("firm_id", "created_at"),)
