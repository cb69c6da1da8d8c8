"""Delivery: one outgoing message as staff see it on the account (Account.deliveries).

Replies from Inbox+ are synced mail: staff without the inbox right see neither them among
the deliveries (nor in the totals) nor by id (services/outbound/outbox.shows_replies). Staff
alerts and digests are read by id only by the member they went to, while holding the inbox
right, and are never among an account's deliveries (outbox.visible_to).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import strawberry
from strawberry import relay
from strawberry.types import Info

from models import OutboundEmail
from schema.enums import DeliveryKind, DeliveryStatus, NotificationCategory
from schema.pagination import DELIVERIES, Connection, page_of, size_of
from schema.types import ScopedNode
from services.outbound import outbox
from services.shared import paging

if TYPE_CHECKING:
    from resolvers.batch_loader import Loader

DEFAULT_PAGE = 20


def delivery_category(value: str | None) -> NotificationCategory | None:
    """The stored category; null for system mail (and for a value this version lacks)."""
    try:
        return NotificationCategory(value) if value else None
    except ValueError:
        return None


@strawberry.type(description="One outgoing email: to whom, what, and how its delivery went.")
class Delivery(ScopedNode):
    model = OutboundEmail
    id: relay.NodeID[int]
    to: str = strawberry.field(description="The recipient's address.")
    subject: str = strawberry.field(description="The subject line as sent.")
    category: NotificationCategory | None = strawberry.field(
        description="The notification category; null for system mail such as invitations."
    )
    kind: DeliveryKind = strawberry.field(description="What the mail is, e.g. INVITATION.")
    status: DeliveryStatus = strawberry.field(description="Where its delivery stands.")
    attempts: int = strawberry.field(description="Sending attempts made so far.")
    last_error: str | None = strawberry.field(
        description="The latest failure's reason as the mail server gave it (kept after a "
        "later success)."
    )
    created_at: datetime = strawberry.field(description="When it was queued.")
    sent_at: datetime | None = strawberry.field(
        description="When the mail server accepted it; null until then."
    )

    @classmethod
    def from_model(cls, row: OutboundEmail) -> Delivery:
        return cls(
            id=row.pk,
            to=row.to_address,
            subject=row.subject,
            category=delivery_category(row.category),
            kind=DeliveryKind(row.kind),
            status=row.status,
            attempts=row.attempts,
            last_error=row.last_error,
            created_at=row.created_at,
            sent_at=row.sent_at,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Delivery | None]:
        staff = info.context.staff
        if staff is None:
            return await cls.resolve_client_nodes(info, node_ids)
        rows = await info.context.loaders.by_id(OutboundEmail).load_many(
            [int(pk) for pk in node_ids]
        )
        return [
            cls.from_model(row) if row is not None and outbox.visible_to(staff, row) else None
            for row in rows
        ]


async def account_deliveries(
    info: Info, account_id: int, first: int | None, after: str | None
) -> Connection[Delivery]:
    """The account's outgoing mail, newest first (for Account.deliveries); pages of many
    accounts load together, as nodes with their positions (resolvers/loaders.py)."""
    size = size_of(first, info.context.settings.max_page_size, DEFAULT_PAGE)
    key = (account_id, DELIVERIES.position(after), size)
    page = await _pages(info).load(key)  # type: ignore[arg-type]
    return page_of(page, size, after, lambda node: node, DELIVERIES)  # loaded as nodes


# The account's total and up to size + 1 deliveries with their positions.
DeliveryPage = tuple[int, list[tuple[Delivery, paging.Position]]]


def _pages(info: Info) -> Loader[outbox.DeliveryPageKey, DeliveryPage]:
    loaders = info.context.loaders
    if outbox.shows_replies(info.context.require_staff()):
        return loaders.deliveries_page
    return loaders.deliveries_page_without_replies
