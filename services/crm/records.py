"""Accounts, contacts, their links and email addresses: the CRM rules.

Invariant: an AccountEmail row exists exactly for each (account, address) where the
address's contact is linked to the account. Toggles start off; unlinking a contact or
removing an address drops its rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q, Subquery
from tortoise.functions import Lower
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models import (
    Account,
    AccountContact,
    AccountEmail,
    AccountType,
    Contact,
    EmailAddress,
    StaffMember,
)
from portico.settings import Settings
from services.portal import access
from services.shared import audit
from services.shared.emails import clean_label, validate_address
from services.shared.errors import ErrorCode, InputError, UserError, input_error
from services.shared.scope import FirmScope
from services.shared.wakeups import HISTORY

MAX_NAME_LENGTH = 100
MAX_ACCOUNT_NAME_LENGTH = 200
MAX_SEARCH_LENGTH = 200
MAX_ADDRESSES_PER_CONTACT = 20
MAX_ACCOUNTS_PER_CONTACT = 100


@dataclass(frozen=True)
class NewAddress:
    address: str
    label: str | None = "Email"


# Listing


def accounts(
    scope: FirmScope, search: str | None = None, include_archived: bool = False
) -> QuerySet[Account]:
    query = scope.query(Account)
    if not include_archived:
        query = query.filter(archived_at=None)
    if term := search_term(search):
        query = query.filter(name__icontains=term)
    return query.annotate(sort_name=Lower("name")).order_by("sort_name", "id")


def contacts(scope: FirmScope, search: str | None = None) -> QuerySet[Contact]:
    query = scope.query(Contact)
    if term := search_term(search):
        matches_address = scope.query(EmailAddress).filter(address_normalized__icontains=term)
        query = query.filter(
            Q(first_name__icontains=term)
            | Q(last_name__icontains=term)
            | Q(id__in=Subquery(matches_address.values("contact_id")))
        )
    return query.annotate(sort_last=Lower("last_name"), sort_first=Lower("first_name")).order_by(
        "sort_last", "sort_first", "id"
    )


def search_term(search: str | None) -> str:
    return (search or "").strip()[:MAX_SEARCH_LENGTH]


# Accounts


def clean_account_name(name: str, *field: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_ACCOUNT_NAME_LENGTH:
        raise input_error(ErrorCode.INVALID_NAME, "An account name is 1-200 characters.", *field)
    return cleaned


async def create_account(
    scope: FirmScope, name: str, type: AccountType, auto_save_attachments: bool = False
) -> Account:
    return await Account.create(
        firm_id=scope.firm_id,
        name=clean_account_name(name, "input", "name"),
        type=type,
        auto_save_attachments=auto_save_attachments,
    )


async def update_account(
    scope: FirmScope,
    account_id: int | None,
    name: str | None = None,
    type: AccountType | None = None,
    auto_save_attachments: bool | None = None,
) -> Account:
    account = await scope.get(Account, account_id, "id")
    if name is not None:
        account.name = clean_account_name(name, "input", "name")
    if type is not None:
        account.type = type
    if auto_save_attachments is not None:
        account.auto_save_attachments = auto_save_attachments
    await account.save()
    return account


# Contacts


def clean_person_names(first_name: str, last_name: str, *field: str) -> tuple[str, str]:
    """Trimmed names: at least one of them, each at most MAX_NAME_LENGTH characters. Every
    failure is reported (under `field`, then "firstName" or "lastName" for a long one)."""
    first, last = first_name.strip(), last_name.strip()
    errors = []
    if not (first or last):
        message = "A contact needs a first or last name."
        errors.append(UserError(ErrorCode.INVALID_NAME, message, field or None))
    for value, key in ((first, "firstName"), (last, "lastName")):
        if len(value) > MAX_NAME_LENGTH:
            message = f"A name has at most {MAX_NAME_LENGTH} characters."
            errors.append(UserError(ErrorCode.INVALID_NAME, message, (*field, key)))
    if errors:
        raise InputError(*errors)
    return first, last


async def update_contact(
    scope: FirmScope,
    contact_id: int | None,
    first_name: str | None = None,
    last_name: str | None = None,
    actor: StaffMember | None = None,
) -> Contact:
    """Renames a contact: each name trimmed and checked as on create; None keeps it. A real
    change is a CONTACT_UPDATED audit entry in each account the contact is linked to."""
    contact = await scope.get(Contact, contact_id, "id")
    first, last = clean_person_names(
        contact.first_name if first_name is None else first_name,
        contact.last_name if last_name is None else last_name,
        "input",
    )
    if (first, last) == (contact.first_name, contact.last_name):
        return contact
    before = {"contact": contact.pk, "firstName": contact.first_name, "lastName": contact.last_name}
    after = {"contact": contact.pk, "firstName": first, "lastName": last}
    account_ids = await (
        scope.query(AccountContact)
        .filter(contact_id=contact.pk)
        .values_list("account_id", flat=True)
    )
    async with in_transaction():
        contact.first_name, contact.last_name = first, last
        await contact.save(update_fields=["first_name", "last_name"])
        for account_id in sorted(account_ids):
            await audit.record(
                scope,
                "CONTACT_UPDATED",
                account_id=account_id,
                staff=actor,
                before=before,
                after=after,
            )
    return contact


async def delete_contact(
    scope: FirmScope, actor: StaffMember | None, contact_id: int | None
) -> Contact:
    """Deletes a contact with its addresses and links, as if each address were removed:
    pending invitations are revoked, the toggles go, and an activated client's access stays
    (under the accounts' unlinked emails) until LOGIN is turned off there. Each account it
    was linked to gets a CONTACT_DELETED audit entry. Returns the contact as it was."""
    contact = await scope.get(Contact, contact_id, "id")
    async with in_transaction():
        addresses = list(
            await scope.query(EmailAddress)
            .filter(contact_id=contact.pk)
            .order_by("id")
            .values_list("address", flat=True)
        )
        account_ids = list(
            await scope.query(AccountContact)
            .filter(contact_id=contact.pk)
            .order_by("account_id")
            .values_list("account_id", flat=True)
        )
        leaving = await (
            scope.query(AccountEmail)
            .filter(email_address__contact_id=contact.pk)
            .values_list("id", flat=True)
        )
        await access.rows_leaving(scope, leaving, actor, reason="contact deleted")
        before = {
            "contact": contact.pk,
            "firstName": contact.first_name,
            "lastName": contact.last_name,
            "emails": addresses,
        }
        for account_id in account_ids:
            await audit.record(
                scope, "CONTACT_DELETED", account_id=account_id, staff=actor, before=before
            )
        # Its addresses, links and toggles go with it (ON DELETE CASCADE).
        await scope.query(Contact).filter(pk=contact.pk).delete()
    return contact


async def create_contact(
    scope: FirmScope,
    first_name: str,
    last_name: str,
    emails: Sequence[NewAddress] = (),
    account_ids: Sequence[int | None] = (),
) -> Contact:
    first, last = clean_person_names(first_name, last_name, "input")
    if len(emails) > MAX_ADDRESSES_PER_CONTACT:
        raise input_error(
            ErrorCode.TOO_MANY, "A contact has at most 20 addresses.", "input", "emails"
        )
    if len(account_ids) > MAX_ACCOUNTS_PER_CONTACT:
        raise input_error(
            ErrorCode.TOO_MANY, "Link at most 100 accounts at once.", "input", "accountIds"
        )
    cleaned = [
        (
            *validate_address(e.address, "input", "emails", str(i), "address"),
            clean_label(e.label, "input", "emails", str(i), "label"),
        )
        for i, e in enumerate(emails)
    ]
    paths: dict[str, tuple[str, ...]] = {}
    for i, (typed, normalized, _) in enumerate(cleaned):
        if normalized in paths:
            raise input_error(
                ErrorCode.EMAIL_TAKEN, f"{typed} is given twice.", "input", "emails", str(i)
            )
        paths[normalized] = ("input", "emails", str(i), "address")
    await _check_addresses_free(scope, paths)
    found = await scope.by_ids(Account, [pk for pk in account_ids if pk is not None])
    for i, pk in enumerate(account_ids):
        if pk not in found:
            raise input_error(
                ErrorCode.NOT_FOUND, "No such account.", "input", "accountIds", str(i)
            )
    async with in_transaction():
        return await insert_contact(scope, first, last, cleaned, found)


async def link_contact(scope: FirmScope, account_id: int | None, contact_id: int | None) -> Account:
    """Links a contact to an account; linking twice is harmless."""
    account = await scope.get(Account, account_id, "accountId")
    contact = await scope.get(Contact, contact_id, "contactId")
    async with in_transaction():
        await link(scope, [account.pk], contact.pk)
    return account


async def unlink_contact(
    scope: FirmScope,
    account_id: int | None,
    contact_id: int | None,
    staff: StaffMember | None = None,
) -> Account:
    """Unlinks a contact: its toggles in this account go, pending invitations are revoked;
    activated users keep their access (it shows under the account's unlinked emails)."""
    account = await scope.get(Account, account_id, "accountId")
    contact = await scope.get(Contact, contact_id, "contactId")
    async with in_transaction():
        removed = (
            await scope.query(AccountContact)
            .filter(account_id=account.pk, contact_id=contact.pk)
            .delete()
        )
        if not removed:
            raise input_error(
                ErrorCode.NOT_LINKED, "That contact is not linked to the account.", "contactId"
            )
        rows = scope.query(AccountEmail).filter(
            account_id=account.pk, email_address__contact_id=contact.pk
        )
        leaving = await rows.values_list("id", flat=True)
        await access.rows_leaving(scope, leaving, staff, reason="contact unlinked")
        await scope.query(AccountEmail).filter(id__in=list(leaving)).delete()
    return account


# Email addresses


async def add_email_address(
    scope: FirmScope, contact_id: int | None, address: str, label: str | None
) -> EmailAddress:
    contact = await scope.get(Contact, contact_id, "contactId")
    typed, normalized = validate_address(address, "email", "address")
    cleaned_label = clean_label(label, "email", "label")
    await _check_addresses_free(scope, {normalized: ("email", "address")})
    async with in_transaction():
        [email] = await add_addresses(scope, contact, [(typed, normalized, cleaned_label)])
        await sync_account_emails(scope, contact_ids=[contact.pk])
    return email


async def update_email_address(
    scope: FirmScope,
    email_id: int | None,
    address: str,
    settings: Settings,
    label: str | None = None,
    staff: StaffMember | None = None,
) -> EmailAddress:
    """Changes an address. A different address (not only its case) revokes its pending
    invitations, and where LOGIN is on a new invitation goes to the new address."""
    email = await scope.get(EmailAddress, email_id, "id")
    typed, normalized = validate_address(address, "address")
    readdressed = normalized != email.address_normalized
    if readdressed:
        await _check_addresses_free(scope, {normalized: ("address",)})
    email.address, email.address_normalized = typed, normalized
    if label is not None:
        email.label = clean_label(label, "label")
    async with in_transaction():
        try:
            await email.save()
        except IntegrityError:
            raise _taken(typed, "address") from None
        if readdressed:
            await access.address_changed(scope, email, staff, settings)
    if readdressed:
        HISTORY.notify()  # the new address's history imports are committed now
    return email


async def remove_email_address(
    scope: FirmScope, email_id: int | None, staff: StaffMember | None = None
) -> EmailAddress:
    email = await scope.get(EmailAddress, email_id, "id")
    async with in_transaction():
        leaving = (
            await scope.query(AccountEmail)
            .filter(email_address_id=email.pk)
            .values_list("id", flat=True)
        )
        await access.rows_leaving(scope, leaving, staff, reason="address removed")
        await email.delete()  # its AccountEmail rows go with it (ON DELETE CASCADE)
    return email


# Shared steps


def _taken(address: str, *field: str) -> InputError:
    return input_error(ErrorCode.EMAIL_TAKEN, f"{address} already belongs to a contact.", *field)


async def _check_addresses_free(scope: FirmScope, addresses: dict[str, tuple[str, ...]]) -> None:
    """EMAIL_TAKEN when a (normalized) address already belongs to a contact of the firm.

    `addresses` maps each address to the input path reported with the error.
    """
    taken = await scope.query(EmailAddress).filter(address_normalized__in=list(addresses)).first()
    if taken is not None:
        raise _taken(taken.address, *addresses[taken.address_normalized])


# Writing (the caller has validated, and holds the transaction): the API and the importer


async def insert_contact(
    scope: FirmScope,
    first_name: str,
    last_name: str,
    addresses: Iterable[tuple[str, str, str]],
    account_ids: Iterable[int],
) -> Contact:
    """A new contact with its addresses (typed, normalized, label), linked to the accounts."""
    contact = await Contact.create(
        firm_id=scope.firm_id, first_name=first_name, last_name=last_name
    )
    await add_addresses(scope, contact, addresses)
    await link(scope, account_ids, contact.pk)
    return contact


async def link(scope: FirmScope, account_ids: Iterable[int], contact_id: int) -> None:
    """Links the contact to the accounts and creates the AccountEmail rows the links owe.
    Idempotent, even when two requests link the same pair at once (the pair is unique)."""
    links = [
        AccountContact(firm_id=scope.firm_id, account_id=pk, contact_id=contact_id)
        for pk in dict.fromkeys(account_ids)
    ]
    if links:
        await AccountContact.bulk_create(links, ignore_conflicts=True)
        await sync_account_emails(scope, contact_ids=[contact_id])


async def add_addresses(
    scope: FirmScope, contact: Contact, cleaned: Iterable[tuple[str, str, str]]
) -> list[EmailAddress]:
    """Adds (typed, normalized, label) addresses; EMAIL_TAKEN if one was taken meanwhile."""
    created = []
    try:
        for typed, normalized, label in cleaned:
            created.append(
                await EmailAddress.create(
                    firm_id=scope.firm_id,
                    contact=contact,
                    address=typed,
                    address_normalized=normalized,
                    label=label,
                )
            )
    except IntegrityError:
        # Another request took the address between the check and the insert.
        raise _taken(typed, "address") from None
    return created


async def sync_account_emails(scope: FirmScope, contact_ids: Sequence[int]) -> None:
    """Create the missing AccountEmail rows for these contacts' links and addresses.

    A row for an address whose owner still has portal access to the account (relinked, or
    the address added again) starts with LOGIN on: the firm sees the access and can end it.
    """
    links = await (
        scope.query(AccountContact)
        .filter(contact_id__in=contact_ids)
        .values_list("account_id", "contact_id")
    )
    emails = await (
        scope.query(EmailAddress)
        .filter(contact_id__in=contact_ids)
        .values_list("id", "contact_id", "address_normalized")
    )
    wanted = {
        (account_id, email_id): normalized
        for account_id, link_contact_id in links
        for email_id, email_contact_id, normalized in emails
        if email_contact_id == link_contact_id
    }
    if not wanted:
        return
    existing = set(
        await scope.query(AccountEmail)
        .filter(email_address_id__in=[e for _, e in wanted])
        .values_list("account_id", "email_address_id")
    )
    missing = sorted(set(wanted) - existing)
    activated = await access.activated_pairs(scope, [(a, wanted[(a, e)]) for a, e in missing])
    await AccountEmail.bulk_create(
        [
            AccountEmail(
                firm_id=scope.firm_id,
                account_id=a,
                email_address_id=e,
                login=(a, wanted[(a, e)]) in activated,
            )
            for a, e in missing
        ],
        ignore_conflicts=True,  # a parallel request may have created some meanwhile
    )
