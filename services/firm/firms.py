"""Firms and their owners (the CLI's create-firm and set-password)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from tortoise.models import Model
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models import Firm, PortalUser, SecondFactorRequirement, StaffMember, StaffRole
from services.shared import passwords
from services.shared.emails import validate_address
from services.shared.errors import ErrorCode, Forbidden, input_error
from services.shared.permissions import require_staff_admin
from services.shared.scope import FirmScope

Person = TypeVar("Person", StaffMember, PortalUser)

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


async def create_firm(
    name: str, slug: str, owner_email: str, owner_name: str, owner_password: str
) -> tuple[Firm, StaffMember]:
    slug = slug.strip().lower()
    if not SLUG.match(slug):
        raise input_error(
            ErrorCode.INVALID_SLUG, "A slug is 2-63 lower-case letters, digits or dashes.", "slug"
        )
    if not name.strip():
        raise input_error(ErrorCode.INVALID_NAME, "A firm needs a name.", "name")
    typed, normalized = validate_address(owner_email, "owner_email")
    passwords.check_strength(owner_password, "owner_password")
    if await Firm.exists(slug=slug):
        raise input_error(ErrorCode.SLUG_TAKEN, f"A firm with slug '{slug}' exists.", "slug")
    password_hash = await passwords.hash_password(owner_password)  # before: keep the write short
    async with in_transaction():
        firm = await Firm.create(name=name.strip(), slug=slug)
        owner = await StaffMember.create(
            firm=firm,
            email=typed,
            email_normalized=normalized,
            name=owner_name.strip() or typed,
            role=StaffRole.OWNER,
            can_manage_accounts=True,
            can_use_inbox=True,
            password_hash=password_hash,
        )
    return firm, owner


async def find_person(candidates: QuerySet[Person], slug: str, email: str) -> Person | None:
    """The one candidate of that firm and (normalised) email. Input longer than the columns
    hold names nobody, and must not reach the query: tortoise refuses to filter by it."""
    if len(slug) > _max_length(Firm, "slug"):
        return None
    if len(email) > _max_length(candidates.model, "email_normalized"):
        return None
    return await candidates.filter(firm__slug=slug, email_normalized=email).first()


def _max_length(model: type[Model], field_name: str) -> int:
    return model._meta.fields_map[field_name].max_length


async def set_staff_password(firm_slug: str, email: str, password: str) -> StaffMember:
    passwords.check_strength(password, "password")
    slug, address = firm_slug.strip().lower(), email.strip().lower()
    staff = await find_person(StaffMember.all(), slug, address)
    if staff is None:
        raise input_error(ErrorCode.NOT_FOUND, "No such staff member in that firm.", "email")
    staff.password_hash = await passwords.hash_password(password)
    await staff.save(update_fields=["password_hash"])
    return staff


class Keep:
    """A setting left out of a change: it stays as it is."""


KEEP = Keep()


@dataclass(frozen=True)
class FirmSettings:
    """A change of the firm's settings; KEEP leaves a setting as it is."""

    copy_address: str | Keep | None = KEEP
    owners_see_all_mail: bool | Keep = KEEP
    client_second_factor: SecondFactorRequirement | Keep = KEEP
    staff_second_factor: SecondFactorRequirement | Keep = KEEP
    second_factor_from: datetime | Keep | None = KEEP


async def update_firm_settings(scope: FirmScope, actor: StaffMember, change: FirmSettings) -> Firm:
    """Owners and admins set the address that gets a copy of every email to clients
    (empty or null: no copies) and what sign-ins need beyond the password, from when. Only an
    owner turns `owners_see_all_mail` on or off (owners reading private threads of personal
    mailboxes: an admin must not grant it to owners behind their colleagues' backs, nor take
    it away)."""
    require_staff_admin(actor)
    if not isinstance(change.owners_see_all_mail, Keep) and actor.role != StaffRole.OWNER:
        raise Forbidden("Only an owner may change whether owners read private mail.")
    firm = await Firm.get(pk=scope.firm_id)
    if not isinstance(change.copy_address, Keep):
        copy_address = change.copy_address
        firm.copy_address = (
            validate_address(copy_address, "input", "copyAddress")[0]
            if copy_address and copy_address.strip()
            else None
        )
    names = ("owners_see_all_mail", "client_second_factor", "staff_second_factor")
    for name in (*names, "second_factor_from"):
        value = getattr(change, name)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # a time without a zone is read as UTC
        if not isinstance(value, Keep):
            setattr(firm, name, value)
    await firm.save(update_fields=["copy_address", *names, "second_factor_from"])
    return firm
