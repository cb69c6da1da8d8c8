"""The live events of EMAIL SYNC on the event bus (services/shared/pubsub).

`message.synced` goes out on the firm's channel after the commit that stored a message or
linked it to more accounts (a sync pass, a reply); the messageSynced subscription reads it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from services.shared.pubsub import EventBus, firm_channel

log = logging.getLogger(__name__)

MESSAGE_SYNCED = "message.synced"


async def announce_message(
    bus: EventBus | None, firm_id: int, message_id: int, account_ids: Sequence[int]
) -> None:
    """Tells the firm's live clients (messageSynced) that a message was stored, or linked to
    more accounts; call it after the commit. Never raises: an event is a hint, the database
    is the record."""
    if bus is None or not account_ids:
        return
    event = {"kind": MESSAGE_SYNCED, "messageId": message_id, "accountIds": list(account_ids)}
    try:
        await bus.publish(firm_channel(firm_id), event)
    except Exception:
        log.exception("pubsub: could not announce message %s", message_id)
