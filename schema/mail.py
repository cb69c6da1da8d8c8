"""EMAIL SYNC types: the firm's connected mailboxes, and the inbox right that guards them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import strawberry
from strawberry import relay
from strawberry.types import Info

from models import Mailbox as MailboxModel
from schema.errors import UserError
from schema.types import ScopedNode


@strawberry.type(
    description="An IMAP/SMTP mailbox of the firm whose mail is synced (staff with the inbox "
    "right). The password is never returned."
)
class Mailbox(ScopedNode):
    model = MailboxModel
    id: relay.NodeID[int]
    address: str
    imap_host: str
    imap_port: int
    sync_status: str = strawberry.field(description="IDLE, SYNCING or FAILED.")
    last_synced_at: datetime | None = strawberry.field(
        description="When the last sync succeeded; null before the first."
    )
    last_error: str | None = strawberry.field(
        description="Why the last sync failed; null when it succeeded."
    )

    @classmethod
    def from_model(cls, row: MailboxModel) -> Mailbox:
        return cls(
            id=row.pk,
            address=row.address,
            imap_host=row.imap_host,
            imap_port=row.imap_port,
            sync_status=str(row.sync_status),
            last_synced_at=row.last_synced_at,
            last_error=row.last_error,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Mailbox | None]:
        """Staff of the firm with the inbox right; null for everyone else."""
        staff = info.context.staff
        if staff is None or not staff.uses_inbox:
            return [None for _ in node_ids]
        return await super().resolve_nodes(info=info, node_ids=node_ids, required=required)


@strawberry.input(description="A mailbox to connect; both logins are checked before it is saved.")
class ConnectMailboxInput:
    address: str
    imap_host: str
    imap_port: int | None = 993
    imap_tls: bool | None = strawberry.field(
        default=True, description="TLS from the first byte (IMAPS); false: plain IMAP."
    )
    smtp_host: str
    smtp_port: int | None = 587
    smtp_tls: bool | None = strawberry.field(
        default=True,
        description="Implicit TLS on port 465, STARTTLS on any other port; false: plain SMTP.",
    )
    username: str = strawberry.field(description="For IMAP and SMTP alike.")
    password: str = strawberry.field(description="Stored encrypted; never returned.")


@strawberry.type
class MailboxPayload:
    errors: list[UserError]
    mailbox: Mailbox | None = None
