"""Outgoing mail to clients (staff): firm emails, system notifications, the firm's copies."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from resolvers.attempt import attempt
from resolvers.mutations.selection import mutation
from schema import ids
from schema.enums import FirmEmailKind, NotificationCategory
from schema.payloads import FirmPayload, SendPayload
from schema.permissions import IsOwnerOrAdmin, IsStaff
from schema.types import Firm
from services.firm import firms
from services.portal import notify


@strawberry.input
class SendFirmEmailInput:
    account_ids: list[strawberry.ID]
    subject: str
    body: str
    kind: FirmEmailKind | None = FirmEmailKind.DIRECT


@strawberry.input
class ClientEventInput:
    account_id: strawberry.ID
    category: NotificationCategory
    title: str
    body: str | None = ""
    link: str | None = None


@strawberry.input
class FirmSettingsInput:
    copy_address: str | None = strawberry.field(
        default=None, description="Where copies of client mail go; empty for none."
    )


@strawberry.type
class NotifyMutations:
    @mutation(
        description="Emails every NOTIFY recipient of the accounts (one copy per address).",
        permission_classes=[IsStaff],
    )
    async def send_firm_email(self, info: Info, input: SendFirmEmailInput) -> SendPayload:
        queued, errors = await attempt(
            info.context,
            notify.send_firm_email(
                info.context.scope,
                [ids.decode(i, "Account") for i in input.account_ids],
                input.subject,
                input.body,
                (input.kind or FirmEmailKind.DIRECT).value,
                info.context.settings,
            ),
        )
        return SendPayload(errors=errors, queued=queued or 0)

    @mutation(
        description="A system notification of the firm's other modules (documents, "
        "signatures, invoices...): to the recipients who chose its category; those not yet "
        "activated get a banner with a working activation link.",
        permission_classes=[IsStaff],
    )
    async def notify_client_event(self, info: Info, input: ClientEventInput) -> SendPayload:
        queued, errors = await attempt(
            info.context,
            notify.notify_client_event(
                info.context.scope,
                ids.decode(input.account_id, "Account"),
                input.category.value,
                input.title,
                input.body or "",
                input.link,
                info.context.settings,
            ),
        )
        return SendPayload(errors=errors, queued=queued or 0)

    @mutation(
        description="The firm's settings (owners and admins).", permission_classes=[IsOwnerOrAdmin]
    )
    async def update_firm_settings(self, info: Info, input: FirmSettingsInput) -> FirmPayload:
        firm, errors = await attempt(
            info.context,
            firms.update_firm_settings(info.context.scope, info.context.staff, input.copy_address),
        )
        return FirmPayload(errors=errors, firm=Firm.from_model(firm) if firm else None)
