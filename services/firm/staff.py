"""Managing a firm's staff: add, change role and rights, deactivate (ends sessions); and each
member's own inbox notification setting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models import InboxNotification, SecondFactorRequirement, StaffMember, StaffRole
from portico.settings import Settings
from services.firm import password_links
from services.shared import sessions
from services.shared.emails import validate_address
from services.shared.errors import ErrorCode, InputError, input_error
from services.shared.permissions import require_may_touch_role, require_staff_admin
from services.shared.scope import FirmScope

MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class StaffChanges:
    name: str | None = None
    role: StaffRole | None = None
    can_manage_accounts: bool | None = None
    can_use_inbox: bool | None = None
    active: bool | None = None
    second_factor: SecondFactorRequirement | None = None


def _clean_name(name: str, *field: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_NAME_LENGTH:
        raise input_error(ErrorCode.INVALID_NAME, "A name is 1-200 characters.", *field)
    return cleaned


async def add_staff_member(
    scope: FirmScope,
    actor: StaffMember,
    email: str,
    name: str,
    role: StaffRole,
    can_manage_accounts: bool,
    can_use_inbox: bool,
    settings: Settings | None = None,
) -> StaffMember:
    """Adds a member; with `settings`, mails them a link to set their password."""
    require_staff_admin(actor)
    require_may_touch_role(actor, role)
    typed, normalized = validate_address(email, "input", "email")
    cleaned_name = _clean_name(name, "input", "name")
    if await scope.query(StaffMember).filter(email_normalized=normalized).exists():
        raise _taken(typed)
    try:
        async with in_transaction():
            member = await StaffMember.create(
                firm_id=scope.firm_id,
                email=typed,
                email_normalized=normalized,
                name=cleaned_name,
                role=role,
                can_manage_accounts=can_manage_accounts,
                can_use_inbox=can_use_inbox,
            )
            # The first password: a single-use link by mail (or `portico set-password`).
            if settings is not None:
                await password_links.issue(member, settings)
    except IntegrityError:  # added twice at once
        raise _taken(typed) from None
    return member


def _taken(address: str) -> InputError:
    return input_error(
        ErrorCode.EMAIL_TAKEN, f"{address} is already a staff member.", "input", "email"
    )


async def update_staff_member(
    scope: FirmScope, actor: StaffMember, staff_id: int | None, changes: StaffChanges
) -> StaffMember:
    require_staff_admin(actor)
    async with in_transaction():
        member = await scope.get(StaffMember, staff_id, "id")
        require_may_touch_role(actor, member.role)
        if changes.role is not None:
            require_may_touch_role(actor, changes.role)
        if changes.name is not None:
            member.name = _clean_name(changes.name, "input", "name")
        demotes = changes.role is not None and changes.role != StaffRole.OWNER
        if member.role == StaffRole.OWNER and (demotes or changes.active is False):
            await _keep_one_owner(scope, member)
        for attr in ("role", "can_manage_accounts", "can_use_inbox", "active", "second_factor"):
            value = getattr(changes, attr)
            if value is not None:
                setattr(member, attr, value)
        await member.save()
        if changes.active is False:
            await sessions.revoke_all_for_staff(member.pk)
    return member


async def _keep_one_owner(scope: FirmScope, leaving: StaffMember) -> None:
    # Lock the active owners (PostgreSQL), so two owners cannot demote each other at once.
    owners = await (
        scope.query(StaffMember).filter(role=StaffRole.OWNER, active=True).select_for_update()
    )
    if not any(owner.pk != leaving.pk for owner in owners):
        raise input_error(
            ErrorCode.LAST_OWNER, "A firm keeps at least one active owner.", "input", "role"
        )


async def set_inbox_notification(
    member: StaffMember, setting: InboxNotification, now: datetime | None = None
) -> StaffMember:
    """The signed-in member's own choice of alerts for new client mail (services/mail/alerts
    and digests). Choosing the daily digest starts its window now: the first digest lists the
    mail since. A member without the inbox right may choose too; nothing is sent to them
    while they lack it (checked when sending, as the right may change at any time)."""
    async with in_transaction():
        current = await StaffMember.filter(id=member.pk).select_for_update().get()
        values: dict[str, object] = {"inbox_notification": setting}
        starts_digest = (
            setting == InboxNotification.DAILY_DIGEST
            and current.inbox_notification != InboxNotification.DAILY_DIGEST
        )
        if starts_digest:
            values["inbox_digest_through"] = now or datetime.now(UTC)
        await StaffMember.filter(id=member.pk).update(**values)
        for name, value in values.items():
            setattr(current, name, value)
    return current
