"""Mailing: one sendFirmEmail to many accounts, with its progress, for the staff who send.

Any staff member of the firm may send firm email, so any may read its mailings (by id through
`node`, or from the sendFirmEmail payload); clients and other firms read null. The counts are
not stored: the first count field asked runs one GROUP BY over the mailing's outbox rows and
the others share its answer (services/outbound/mailings.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import strawberry
from strawberry import relay

from models import Mailing as MailingModel
from schema.enums import FirmEmailKind
from schema.types import ScopedNode
from services.outbound import mailings


@strawberry.type(
    description="A firm email sent to many accounts at once, and how far its delivery has gone."
)
class Mailing(ScopedNode):
    model = MailingModel
    id: relay.NodeID[int]
    firm_id: strawberry.Private[int]
    kind: FirmEmailKind = strawberry.field(description="What kind of mailing it is.")
    subject: str = strawberry.field(description="The subject as the firm wrote it.")
    total: int = strawberry.field(
        description="Messages queued for it, the firm's copies included (one per address)."
    )
    created_at: datetime = strawberry.field(description="When it was sent (queued).")
    # One count for every count field of this object (they resolve together).
    counting: strawberry.Private[asyncio.Future[mailings.Progress] | None] = None

    @classmethod
    def from_model(cls, row: MailingModel) -> Mailing:
        return cls(
            id=row.pk,
            firm_id=row.firm_id,
            kind=FirmEmailKind(row.kind),
            subject=row.subject,
            total=row.total,
            created_at=row.created_at,
        )

    async def _progress(self) -> mailings.Progress:
        if self.counting is None:
            self.counting = asyncio.ensure_future(mailings.progress(self.firm_id, self.id))
        return await self.counting

    @strawberry.field(description="Messages waiting to be sent, or to be tried again.")
    async def queued(self) -> int:
        return (await self._progress()).queued

    @strawberry.field(description="Messages the mail server accepted.")
    async def sent(self) -> int:
        return (await self._progress()).sent

    @strawberry.field(description="Messages that could not be delivered (given up).")
    async def failed(self) -> int:
        return (await self._progress()).failed

    @strawberry.field(
        description="Messages withdrawn before sending (e.g. the account was archived)."
    )
    async def cancelled(self) -> int:
        return (await self._progress()).cancelled
