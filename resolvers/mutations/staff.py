"""addStaffMember and updateStaffMember (owners and admins); setInboxNotification (each
member for themself)."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from models import StaffRole
from resolvers.attempt import attempt
from resolvers.mutations.selection import mutation
from schema import ids
from schema.enums import InboxNotification
from schema.inputs import StaffMemberInput, UpdateStaffMemberInput
from schema.payloads import StaffMemberPayload
from schema.permissions import IsOwnerOrAdmin, IsStaff
from schema.types import StaffMember
from services.firm import staff


@strawberry.type
class StaffMutations:
    @mutation(
        description="Adds a staff member and mails them a single-use link to set a password.",
        permission_classes=[IsOwnerOrAdmin],
    )
    async def add_staff_member(
        self,
        info: Info,
        input: Annotated[StaffMemberInput, strawberry.argument(description="Who to add.")],
    ) -> StaffMemberPayload:
        member, errors = await attempt(
            info.context,
            staff.add_staff_member(
                info.context.scope,
                info.context.staff,
                email=input.email,
                name=input.name,
                role=input.role or StaffRole.EMPLOYEE,
                can_manage_accounts=bool(input.can_manage_accounts),
                can_use_inbox=bool(input.can_use_inbox),
                settings=info.context.settings,
            ),
        )
        return StaffMemberPayload(
            errors=errors, staff_member=StaffMember.from_model(member) if member else None
        )

    @mutation(
        description="Changes a member; deactivating one ends their sessions at once.",
        permission_classes=[IsOwnerOrAdmin],
    )
    async def update_staff_member(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The staff member's id.")],
        input: Annotated[
            UpdateStaffMemberInput, strawberry.argument(description="What to change.")
        ],
    ) -> StaffMemberPayload:
        changes = staff.StaffChanges(
            name=input.name,
            role=input.role,
            can_manage_accounts=input.can_manage_accounts,
            can_use_inbox=input.can_use_inbox,
            active=input.active,
            second_factor=input.second_factor,
        )
        member, errors = await attempt(
            info.context,
            staff.update_staff_member(
                info.context.scope, info.context.staff, ids.decode(id, "StaffMember"), changes
            ),
        )
        return StaffMemberPayload(
            errors=errors, staff_member=StaffMember.from_model(member) if member else None
        )

    @mutation(
        description="The signed-in member's alerts for new client mail: OFF, IMMEDIATE (an "
        "email per message) or DAILY_DIGEST (one email a day). Sent only while they have the "
        "inbox right.",
        permission_classes=[IsStaff],
    )
    async def set_inbox_notification(
        self,
        info: Info,
        setting: Annotated[InboxNotification, strawberry.argument(description="The new setting.")],
    ) -> StaffMemberPayload:
        member, errors = await attempt(
            info.context,
            staff.set_inbox_notification(info.context.require_staff(), setting),
        )
        return StaffMemberPayload(
            errors=errors, staff_member=StaffMember.from_model(member) if member else None
        )
