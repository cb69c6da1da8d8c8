"""The CRM core: accounts, contacts, their links, email addresses and per-account toggles.

Every row carries firm_id, so one filter scopes any query to a tenant (services/shared/scope.py).
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from models.firms import Firm


class AccountType(StrEnum):
    INDIVIDUAL = "INDIVIDUAL"
    FAMILY = "FAMILY"
    COMPANY = "COMPANY"


class NotificationCategory(StrEnum):
    """The kinds of system notification an address may choose (domain.md, NOTIFY)."""

    DOCUMENT_UPLOADS = "DOCUMENT_UPLOADS"
    SIGNATURE_REQUESTS = "SIGNATURE_REQUESTS"
    APPROVALS = "APPROVALS"
    CHATS_AND_TASKS = "CHATS_AND_TASKS"
    PROPOSALS = "PROPOSALS"
    ORGANIZERS = "ORGANIZERS"
    INVOICES_AND_PAYMENTS = "INVOICES_AND_PAYMENTS"


class Account(Model):
    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="accounts", on_delete=fields.CASCADE
    )
    firm_id: int
    name = fields.CharField(max_length=200)
    type = fields.CharEnumField(AccountType, max_length=16)
    auto_save_attachments = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    archived_at = fields.DatetimeField(
        null=True, description="archived: out of lists and the portal"
    )

    class Meta:
        table = "account"
        indexes = (("firm_id", "name"),)


class Contact(Model):
    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="contacts", on_delete=fields.CASCADE
    )
    firm_id: int
    first_name = fields.CharField(max_length=100)
    last_name = fields.CharField(max_length=100)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "contact"
        indexes = (("firm_id", "last_name", "first_name"),)


class AccountContact(Model):
    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="account_contacts", on_delete=fields.CASCADE
    )
    firm_id: int
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "portico.Account", related_name="contact_links", on_delete=fields.CASCADE
    )
    account_id: int
    contact: fields.ForeignKeyRelation[Contact] = fields.ForeignKeyField(
        "portico.Contact", related_name="account_links", on_delete=fields.CASCADE, db_index=True
    )
    contact_id: int
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "account_contact"
        unique_together = (("account", "contact"),)


class EmailAddress(Model):
    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="email_addresses", on_delete=fields.CASCADE
    )
    firm_id: int
    contact: fields.ForeignKeyRelation[Contact] = fields.ForeignKeyField(
        "portico.Contact", related_name="email_addresses", on_delete=fields.CASCADE, db_index=True
    )
    contact_id: int
    address = fields.CharField(max_length=254, description="as typed, for display")
    address_normalized = fields.CharField(max_length=254, description="lower-cased, for lookups")
    label = fields.CharField(max_length=100, default="Email")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "email_address"
        unique_together = (("firm", "address_normalized"),)


class AccountEmail(Model):
    """One address as it stands in one account: the LOGIN, NOTIFY and EMAIL SYNC toggles."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="account_emails", on_delete=fields.CASCADE
    )
    firm_id: int
    account: fields.ForeignKeyRelation[Account] = fields.ForeignKeyField(
        "portico.Account", related_name="emails", on_delete=fields.CASCADE
    )
    account_id: int
    email_address: fields.ForeignKeyRelation[EmailAddress] = fields.ForeignKeyField(
        "portico.EmailAddress",
        related_name="account_emails",
        on_delete=fields.CASCADE,
        db_index=True,
    )
    email_address_id: int
    login = fields.BooleanField(default=False)
    notify = fields.BooleanField(default=False)
    email_sync = fields.BooleanField(default=False)
    notify_all = fields.BooleanField(default=True)
    notify_categories = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "account_email"
        unique_together = (("account", "email_address"),)
