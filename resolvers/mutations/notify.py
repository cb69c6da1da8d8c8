"""Outgoing mail to clients (staff): firm emails, system notifications, the firm's copies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types import Info

from resolvers.attempt import attempt
from resolvers.mutations.selection import mutation
from schema import ids
from schema.enums import FirmEmailKind, NotificationCategory, SecondFactorRequirement
from schema.mailings import Mailing
from schema.payloads import FirmPayload, SendPayload
from schema.permissions import IsOwnerOrAdmin, IsStaff
from schema.types import Firm
from services.firm import firms
from services.portal import notify


@strawberry.input(description="A firm email to the NOTIFY recipients of some accounts.")
class SendFirmEmailInput:
    account_ids: list[strawberry.ID] = strawberry.field(
        description="Ids of the accounts whose recipients get it (at least one)."
    )
    subject: str = strawberry.field(description="The subject line.")
    body: str = strawberry.field(description="The text, as plain text.")
    kind: FirmEmailKind | None = strawberry.field(
        default=FirmEmailKind.DIRECT, description="What kind of mailing (default DIRECT)."
    )


@strawberry.input(description="A system notification for one account's recipients.")
class ClientEventInput:
    account_id: strawberry.ID = strawberry.field(description="The account's id.")
    category: NotificationCategory = strawberry.field(
        description="Its category: only recipients who chose it (or all) get it."
    )
    title: str = strawberry.field(description="The subject line and heading.")
    body: str | None = strawberry.field(default="", description="The text (default empty).")
    link: str | None = strawberry.field(
        default=None, description="An http(s) URL to include; null for none."
    )


@strawberry.input(description="Changes to the firm's settings.")
class FirmSettingsInput:
    copy_address: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Where copies of client mail go; empty or null for none, left out: unchanged.",
    )
    owners_see_all_mail: bool | None = strawberry.field(
        default=strawberry.UNSET,
        description="Owners read the private threads of personal mailboxes too (only an "
        "owner may change it). Left out or null: unchanged.",
    )
    client_second_factor: SecondFactorRequirement | None = strawberry.field(
        default=strawberry.UNSET,
        description="What clients need beyond their password. Left out or null: unchanged.",
    )
    staff_second_factor: SecondFactorRequirement | None = strawberry.field(
        default=strawberry.UNSET,
        description="What staff need beyond their password (a member's own setting may ask "
        "more). Left out or null: unchanged.",
    )
    second_factor_from: datetime | None = strawberry.field(
        default=strawberry.UNSET,
        description="The two requirements hold from this moment on, so people can set up "
        "an authenticator first; null: at once. Left out: unchanged.",
    )

    def change(self) -> firms.FirmSettings:
        def kept(value: object) -> object:
            return firms.KEEP if value is strawberry.UNSET else value

        def kept_or_null(value: object) -> object:
            return firms.KEEP if value is strawberry.UNSET or value is None else value

        return firms.FirmSettings(
            copy_address=kept(self.copy_address),  # type: ignore[arg-type]
            owners_see_all_mail=kept_or_null(self.owners_see_all_mail),  # type: ignore[arg-type]
            client_second_factor=kept_or_null(self.client_second_factor),  # type: ignore[arg-type]
            staff_second_factor=kept_or_null(self.staff_second_factor),  # type: ignore[arg-type]
            second_factor_from=kept(self.second_factor_from),  # type: ignore[arg-type]
        )


@strawberry.type
class NotifyMutations:
    @mutation(
        description="Emails every NOTIFY recipient of the accounts (one copy per address), "
        "up to 10,000 accounts at once; answers once the mail is queued, with the mailing "
        "whose counts show its delivery.",
        permission_classes=[IsStaff],
    )
    async def send_firm_email(
        self,
        info: Info,
        input: Annotated[
            SendFirmEmailInput,
            strawberry.argument(description="The accounts, the text and the kind of mailing."),
        ],
    ) -> SendPayload:
        sent, errors = await attempt(
            info.context,
            notify.queue_firm_email(
                info.context.scope,
                [ids.decode(i, "Account") for i in input.account_ids],
                input.subject,
                input.body,
                (input.kind or FirmEmailKind.DIRECT).value,
                info.context.settings,
            ),
        )
        if sent is None:
            return SendPayload(errors=errors)
        return SendPayload(
            errors=errors, queued=sent.queued, mailing=Mailing.from_model(sent.mailing)
        )

    @mutation(
        description="A system notification of the firm's other modules (documents, "
        "signatures, invoices...): to the recipients who chose its category; those not yet "
        "activated get a banner with a working activation link.",
        permission_classes=[IsStaff],
    )
    async def notify_client_event(
        self,
        info: Info,
        input: Annotated[
            ClientEventInput,
            strawberry.argument(description="The account, the category and the text."),
        ],
    ) -> SendPayload:
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
    async def update_firm_settings(
        self,
        info: Info,
        input: Annotated[
            FirmSettingsInput, strawberry.argument(description="The settings to change.")
        ],
    ) -> FirmPayload:
        firm, errors = await attempt(
            info.context,
            firms.update_firm_settings(info.context.scope, info.context.staff, input.change()),
        )
        return FirmPayload(errors=errors, firm=Firm.from_model(firm) if firm else None)
