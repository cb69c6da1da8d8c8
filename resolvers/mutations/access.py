"""The toggles and portal access (staff with the manage-accounts right)."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from models import AccountEmail as AccountEmailModel
from resolvers.attempt import attempt
from resolvers.mutations.selection import mutation
from schema import ids
from schema.enums import NotificationCategory
from schema.payloads import AccountEmailPayload, AccountPayload, InvitationPayload
from schema.permissions import ManagesAccounts
from schema.types import Account, AccountEmail, Invitation
from services.portal import access
from services.shared.scope import FirmScope

manages_accounts = [ManagesAccounts]


@strawberry.input(description="Toggles of one address in one account; null keeps a toggle.")
class SetEmailFlagsInput:
    account_email_id: strawberry.ID = strawberry.field(
        description="The id of the address in the account (AccountEmail)."
    )
    login: bool | None = strawberry.field(
        default=None, description="LOGIN: access to the account's portal."
    )
    notify: bool | None = strawberry.field(
        default=None, description="NOTIFY: receives the firm's mail for the account."
    )
    email_sync: bool | None = strawberry.field(
        default=None, description="EMAIL SYNC: mail with the address shows in the inbox."
    )
    send_invitation: bool | None = strawberry.field(
        default=True,
        description="When LOGIN goes on: send the invitation email now (true) or later (false).",
    )


@strawberry.input(description="Which system notifications an address receives in one account.")
class NotificationPreferencesInput:
    account_email_id: strawberry.ID = strawberry.field(
        description="The id of the address in the account (AccountEmail)."
    )
    all: bool = strawberry.field(description="All categories, or only those in `enabled`.")
    enabled: list[NotificationCategory] | None = strawberry.field(
        default_factory=list, description="The categories chosen when `all` is false."
    )


def _account_email_payload(row: AccountEmailModel | None, errors: list) -> AccountEmailPayload:
    return AccountEmailPayload(
        errors=errors, account_email=AccountEmail.from_model(row) if row else None
    )


@strawberry.type
class AccessMutations:
    @mutation(
        description="Flips an address's toggles in one account. LOGIN on creates an "
        "invitation (emailed unless sendInvitation is false); LOGIN off ends that person's "
        "access to this account at once.",
        permission_classes=manages_accounts,
    )
    async def set_email_flags(
        self,
        info: Info,
        input: Annotated[
            SetEmailFlagsInput,
            strawberry.argument(description="The address in the account, and the toggles to set."),
        ],
    ) -> AccountEmailPayload:
        row, errors = await attempt(
            info.context,
            access.set_email_flags(
                info.context.scope,
                info.context.staff,
                ids.decode(input.account_email_id, "AccountEmail"),
                access.FlagChanges(input.login, input.notify, input.email_sync),
                info.context.settings,
                send_invitation=input.send_invitation is not False,
            ),
        )
        return _account_email_payload(row, errors)

    @mutation(
        description="Sends a new invitation; older pending ones stop working.",
        permission_classes=manages_accounts,
    )
    async def resend_invitation(
        self,
        info: Info,
        account_email_id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The id of the address in the account (AccountEmail)."),
        ],
    ) -> InvitationPayload:
        row, errors = await attempt(
            info.context,
            access.resend_invitation(
                info.context.scope,
                info.context.staff,
                ids.decode(account_email_id, "AccountEmail"),
                info.context.settings,
            ),
        )
        return InvitationPayload(
            errors=errors, invitation=Invitation.from_model(row) if row else None
        )

    @mutation(
        description="LOGIN off for an unlinked email: the user loses access to the account.",
        permission_classes=manages_accounts,
    )
    async def remove_portal_access(
        self,
        info: Info,
        portal_access_id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="The id of the access (PortalAccess), from Account.unlinkedEmails."
            ),
        ],
    ) -> AccountPayload:
        row, errors = await attempt(
            info.context,
            access.remove_portal_access(
                info.context.scope,
                info.context.staff,
                ids.decode(portal_access_id, "PortalAccess"),
            ),
        )
        return AccountPayload(errors=errors, account=Account.from_model(row) if row else None)

    @mutation(
        description="Which system notifications an address receives in one account: staff "
        "with the manage-accounts right, or a client for their own address in the account "
        "they are in."
    )
    async def set_notification_preferences(
        self,
        info: Info,
        input: Annotated[
            NotificationPreferencesInput,
            strawberry.argument(description="The address in the account, and its choice."),
        ],
    ) -> AccountEmailPayload:
        context = info.context
        client = None
        if context.staff is None:
            user = context.require_client()
            client = (user, await context.current_account_id())
        row, errors = await attempt(
            context,
            access.set_notification_preferences(
                FirmScope((context.staff or context.portal_user).firm_id),
                ids.decode(input.account_email_id, "AccountEmail"),
                notify_all=input.all,
                categories=[c.value for c in input.enabled or []],
                staff=context.staff,
                client=client,
            ),
        )
        return _account_email_payload(row, errors)
