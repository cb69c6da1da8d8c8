"""Signed webhooks (owners and admins of the firm): the endpoints, their deliveries, and the
inputs and payloads of their mutations. Everyone else reads null by id (node) and is refused
the fields (FORBIDDEN)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry import relay
from strawberry.types import Info

from models import WebhookAttempt as WebhookAttemptModel
from models import WebhookDelivery as WebhookDeliveryModel
from models import WebhookDeliveryStatus as _WebhookDeliveryStatus
from models import WebhookEndpoint as WebhookEndpointModel
from schema.enums import expose
from schema.errors import UserError
from schema.pagination import AFTER, FIRST, Connection, Keyset, page_of, size_of
from schema.types import ScopedNode
from services.webhooks.events import WebhookEvent as _WebhookEvent

WebhookEvent = expose(
    _WebhookEvent,
    "An event a webhook endpoint may receive. On the wire (the body's type) it is written "
    "lower-case with dots, e.g. invitation.accepted.",
    {  # keyed by member: a member's string is its wire name
        _WebhookEvent.INVITATION_SENT: "An invitation to the portal was sent (invitation.sent).",
        _WebhookEvent.INVITATION_ACCEPTED: "A client accepted an invitation (invitation.accepted).",
        _WebhookEvent.PORTAL_ACCESS_REVOKED: "A client's portal access to an account ended "
        "(portal_access.revoked).",
        _WebhookEvent.EMAIL_FLAGS_CHANGED: "An address's LOGIN, NOTIFY or EMAIL SYNC changed "
        "(email_flags.changed).",
        _WebhookEvent.DELIVERY_FAILED: "An email to a client could not be delivered "
        "(delivery.failed).",
        _WebhookEvent.MESSAGE_SYNCED: "Mail concerning a client was synced (message.synced).",
        _WebhookEvent.DOCUMENT_UPLOADED: "A document was added to an account (document.uploaded).",
        _WebhookEvent.CLIENT_SIGNED_IN: "A client signed in to the portal (client.signed_in).",
    },
)
WebhookDeliveryStatus = expose(
    _WebhookDeliveryStatus,
    "Where one webhook delivery stands.",
    {
        "PENDING": "Not sent yet, or being tried again (see nextAttemptAt).",
        "SUCCEEDED": "The endpoint answered with a 2xx status.",
        "FAILED": "Given up after the last attempt failed.",
    },
)

# Newest first, by (created_at, id).
WEBHOOK_DELIVERIES = Keyset("webhookDeliveries", ["created_at"], [datetime], descending=True)
DEFAULT_PAGE = 20


def _admins_only(info: Info) -> bool:
    staff = info.context.staff
    return staff is not None and staff.is_admin


@strawberry.type(description="One POST of a webhook delivery: when, how long, what came back.")
class WebhookAttempt:
    started_at: datetime = strawberry.field(description="When the request was started.")
    duration_ms: int = strawberry.field(
        description="Milliseconds until the answer, or until it failed."
    )
    status_code: int | None = strawberry.field(
        description="The HTTP status answered; null when none came (no connection, timeout)."
    )
    error: str | None = strawberry.field(
        description="Why it failed (with the first characters of the answer, when there was "
        "one); null on success."
    )
    succeeded: bool = strawberry.field(description="True: a 2xx status came back in time.")

    @classmethod
    def from_model(cls, row: WebhookAttemptModel) -> WebhookAttempt:
        return cls(
            started_at=row.started_at,
            duration_ms=row.duration_ms,
            status_code=row.status_code,
            error=row.error,
            succeeded=row.succeeded,
        )


@strawberry.type(
    description="One event sent (or to be sent) to a webhook endpoint, with its attempts so far."
)
class WebhookDelivery(ScopedNode):
    model = WebhookDeliveryModel
    id: relay.NodeID[int]
    event_id: str = strawberry.field(
        description="The webhook-id header: the same on every attempt, so receivers dedupe by it."
    )
    event: WebhookEvent = strawberry.field(description="The event type.")
    status: WebhookDeliveryStatus = strawberry.field(description="Where the delivery stands.")
    attempts: int = strawberry.field(description="Attempts made so far.")
    last_status_code: int | None = strawberry.field(
        description="The HTTP status of the last attempt; null when none answered."
    )
    last_error: str | None = strawberry.field(description="Why the last attempt failed.")
    next_attempt_at: datetime | None = strawberry.field(
        description="When it is tried next; null once it succeeded or failed for good."
    )
    created_at: datetime = strawberry.field(description="When the event was queued.")

    @strawberry.field(
        description="Its attempts, newest first: the last 50 (attempts counts them all)."
    )
    async def attempt_log(self, info: Info) -> list[WebhookAttempt]:
        rows = await info.context.loaders.webhook_attempts.load(self.id)
        return [WebhookAttempt.from_model(row) for row in rows]

    @classmethod
    def from_model(cls, row: WebhookDeliveryModel) -> WebhookDelivery:
        return cls(
            id=row.pk,
            event_id=row.event_id,
            event=_WebhookEvent(row.event),
            status=_WebhookDeliveryStatus(row.status),
            attempts=row.attempts,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            next_attempt_at=row.next_attempt_at,
            created_at=row.created_at,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[WebhookDelivery | None]:
        """Owners and admins of the firm; null for everyone else."""
        if not _admins_only(info):
            return [None for _ in node_ids]
        return await super().resolve_nodes(info=info, node_ids=node_ids, required=required)


@strawberry.type(
    description="An HTTP(S) URL of the firm that receives the events it names, each request "
    "signed with the endpoint's secret (Standard Webhooks). The secret is never returned here."
)
class WebhookEndpoint(ScopedNode):
    model = WebhookEndpointModel
    id: relay.NodeID[int]
    url: str = strawberry.field(description="Where the events are POSTed.")
    events: list[WebhookEvent] = strawberry.field(description="The events it receives.")
    enabled: bool = strawberry.field(description="False: nothing is sent to it.")
    disabled_reason: str | None = strawberry.field(
        description="Why Portico disabled it (e.g. days of failures); null when enabled or "
        "disabled by staff."
    )
    created_at: datetime = strawberry.field(description="When it was registered.")

    @strawberry.field(description="The events sent to it, newest first.")
    async def deliveries(
        self,
        info: Info,
        first: Annotated[int | None, strawberry.argument(description=FIRST)] = DEFAULT_PAGE,
        after: Annotated[str | None, strawberry.argument(description=AFTER)] = None,
    ) -> Connection[WebhookDelivery]:
        size = size_of(first, info.context.settings.max_page_size, DEFAULT_PAGE)
        key = (self.id, WEBHOOK_DELIVERIES.position(after), size, None)
        page = await info.context.loaders.webhook_deliveries_page.load(key)
        return page_of(page, size, after, WebhookDelivery.from_model, WEBHOOK_DELIVERIES)

    @classmethod
    def from_model(cls, row: WebhookEndpointModel) -> WebhookEndpoint:
        return cls(
            id=row.pk,
            url=row.url,
            events=[_WebhookEvent(e) for e in row.events],
            enabled=row.enabled,
            disabled_reason=row.disabled_reason,
            created_at=row.created_at,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[WebhookEndpoint | None]:
        """Owners and admins of the firm; null for everyone else."""
        if not _admins_only(info):
            return [None for _ in node_ids]
        return await super().resolve_nodes(info=info, node_ids=node_ids, required=required)


@strawberry.input(description="A webhook endpoint: where, which events, and whether it is on.")
class WebhookEndpointInput:
    url: str = strawberry.field(
        description="An https URL (http too outside production); in production its host must "
        "resolve to public addresses only."
    )
    events: list[WebhookEvent] = strawberry.field(
        description="The events it receives: at least one, each once."
    )
    enabled: bool | None = strawberry.field(
        default=True, description="False: registered but nothing is sent (default true)."
    )


@strawberry.type(description="What redeliverWebhook did.")
class WebhookDeliveryPayload:
    errors: list[UserError] = strawberry.field(
        description="Why nothing was done; empty on success."
    )
    delivery: WebhookDelivery | None = strawberry.field(
        default=None, description="The delivery, due again; null on failure."
    )


@strawberry.type(description="What a webhook endpoint mutation did.")
class WebhookEndpointPayload:
    errors: list[UserError] = strawberry.field(
        description="Why nothing was done; empty on success."
    )
    endpoint: WebhookEndpoint | None = strawberry.field(
        default=None, description="The endpoint concerned; null on failure."
    )
    secret: str | None = strawberry.field(
        default=None,
        description="The signing secret (whsec_...), only in the answer of "
        "createWebhookEndpoint and rotateWebhookSecret: it cannot be read again, keep it now.",
    )
