"""Attachments of synced mail: kept by content hash (as documents are), listed per message."""

from __future__ import annotations

from collections.abc import Sequence

from models import Attachment
from services.scope import FirmScope


async def by_message(scope: FirmScope, message_ids: Sequence[int]) -> dict[int, list[Attachment]]:
    """The attachments of each message, in the order they came in the message."""
    rows = (
        await scope.query(Attachment)
        .filter(message_id__in=list(message_ids))
        .order_by("message_id", "position")
    )
    found: dict[int, list[Attachment]] = {pk: [] for pk in message_ids}
    for row in rows:
        found[row.message_id].append(row)
    return found
