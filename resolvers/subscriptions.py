"""The Subscription root: new synced mail pushed to staff clients as it is stored.

The sync engine publishes `{"kind": "message.synced", "messageId": ..., "accountIds": [...]}`
on its firm's channel after the commit. Each subscriber reads that channel through a bounded
queue of its own (a slow client misses events, never delays others), checks its session
again, and loads the message through its own firm scope with fresh loaders, so what it
receives is what a query would show at that moment.

Over the WebSocket handlers, subscribers with the same document, variables and visibility
share that work (resolvers/fanout.py): one session query for all of them per event, one
execution, one encoding; each still gets exactly what it would get alone.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from models import Account as AccountModel
from resolvers import fanout
from resolvers.context import Context
from schema import ids
from schema.messages import Message
from schema.metrics import live
from services.firm import enrollment
from services.mail import message_pages
from services.mail.events import MESSAGE_SYNCED
from services.shared import permissions
from services.shared.errors import ErrorCode
from services.shared.pubsub import DEFAULT_MAX_QUEUE, EventBus, firm_channel

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = DEFAULT_MAX_QUEUE  # events held for one slow client before it misses some


@strawberry.type(
    description="Live updates over WebSocket (graphql-transport-ws or graphql-ws), for staff "
    "with the inbox right."
)
class Subscription:
    @strawberry.subscription(
        description="New synced mail, as it is stored: all accounts the staff member may "
        "see, or one account."
    )
    async def message_synced(
        self,
        info: Info,
        account_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="Only this account's mail; null: every account."),
        ] = None,
    ) -> AsyncGenerator[Message, None]:
        # Checked before the stream starts: a refused subscriber gets one error, nothing else.
        context: Context = info.context
        await _require_inbox(context)
        account_pk = await _account(context, account_id) if account_id is not None else None
        bus = context.bus
        if bus is None:
            log.error(
                "messageSynced: the app has no event bus (it was not started with its lifespan)"
            )
            raise GraphQLError(
                "Live updates are not available on this server.",
                extensions={"code": ErrorCode.SUBSCRIPTIONS_UNAVAILABLE},
            )
        sink = fanout.current_sink.get()
        if sink is not None and fanout.registry_for(bus).enabled:
            return live(_multiplexed(context, info.schema, bus, account_pk, sink))
        return live(_synced_messages(context, bus, account_pk))


async def _synced_messages(
    context: Context, bus: EventBus, account_id: int | None
) -> AsyncGenerator[Message, None]:
    channel = firm_channel(context.require_staff().firm_id)
    async with bus.subscribe(channel, max_queue=SUBSCRIBER_QUEUE) as events:
        async for event in events:
            message_id = _message_of(event, account_id)
            if message_id is None:
                continue
            # Signed out, deactivated or the inbox right taken away: the error ends the stream.
            await context.recheck_session(shared=True)
            await _require_inbox(context)
            row = await message_pages.announced_message(context.scope, message_id)
            if row is not None:  # gone meanwhile: nothing to show
                yield Message.from_model(row, context.mail_reader)


async def _multiplexed(
    context: Context, schema: Any, bus: EventBus, account_id: int | None, sink: fanout.Sink
) -> AsyncGenerator[Message, None]:
    """As `_synced_messages`, each event worked out once for the subscriber's group
    (resolvers/fanout.py) and written to the socket as it is: the same checks in the same
    order, the same errors."""
    staff = context.require_staff()
    registry = fanout.registry_for(bus)
    member = fanout.Member(context.socket_token, sink, context.request, context.settings)
    group = registry.join(
        fanout.group_key(sink, staff, account_id),
        member,
        schema=schema,
        sink=sink,
        channel=firm_channel(staff.firm_id),
        accepts=lambda event: _message_of(event, account_id),
    )
    try:
        await group.started()
        while (outcome := await member.next()) is not None:
            # What the group wrote for it goes out first; only then is the next event taken
            # up (checked, sent), as a stock subscriber's next event waits for its last send.
            await member.flushed()
            if outcome.error is not None:
                # A fresh exception per member: re-raising the one shared object would grow
                # its traceback with every member's frames (and the log with it).
                raise RuntimeError("messageSynced: the event could not be worked out") from (
                    outcome.error
                )
            # Signed out, deactivated or the inbox right taken away: the error ends the stream.
            # Checked now, not with the group's lookup: an outcome waits here only when this
            # socket was backed up or joined late, and a revocation may have come meanwhile
            # (while the socket drained too).
            await context.recheck_session(shared=True)
            await _require_inbox(context)
            if outcome.row is None:  # gone meanwhile: nothing to show
                continue
            if (
                outcome.payload is not None
                and _sees_as(context, group.view)
                and not fanout.reads_privately(context.require_staff().pk, outcome.row)
            ):
                await sink.send(sink.frame(outcome.payload))
            else:  # its rights changed since it joined, or the message is private to it:
                # executed for it alone, as stock
                yield Message.from_model(outcome.row, context.mail_reader)
    finally:
        member.cancel_write()
        registry.leave(group, member)


def _message_of(event: dict[str, Any], account_id: int | None) -> int | None:
    """The id of the message an event announces, if this subscriber wants it."""
    message_id = event.get("messageId")
    account_ids = event.get("accountIds")
    if event.get("kind") != MESSAGE_SYNCED or type(message_id) is not int:
        return None
    if account_id is not None and (
        not isinstance(account_ids, list) or account_id not in account_ids
    ):
        return None
    return message_id


def _sees_as(context: Context, view: fanout.Visibility) -> bool:
    return fanout.visibility(context.require_staff()) == view


async def _require_inbox(context: Context) -> None:
    """The inbox right, and a full session (an authenticator required since the
    subscription started makes it enrollment-only)."""
    permissions.require_inbox(context.require_staff())
    assert context.session is not None
    await enrollment.require_full_session(context.session)


async def _account(context: Context, account_id: strawberry.ID) -> int:
    """The account's primary key; NOT_FOUND for an unknown id or another firm's."""
    row = await context.scope.find(AccountModel, ids.decode(account_id, "Account"))
    if row is None:
        raise GraphQLError(
            "No such account.", extensions={"code": ErrorCode.NOT_FOUND, "argument": "accountId"}
        )
    return row.pk
