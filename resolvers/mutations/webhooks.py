"""Webhook mutations (owners and admins): registering, changing and deleting endpoints,
rotating an endpoint's signing secret, and sending a delivery again."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from models import WebhookEndpoint as WebhookEndpointModel
from resolvers.attempt import attempt
from resolvers.mutations.selection import mutation
from schema import ids
from schema.errors import UserError
from schema.permissions import IsOwnerOrAdmin
from schema.webhooks import (
    WebhookDelivery,
    WebhookDeliveryPayload,
    WebhookEndpoint,
    WebhookEndpointInput,
    WebhookEndpointPayload,
)
from services.webhooks import endpoints

admins = [IsOwnerOrAdmin]

ID_ARGUMENT = strawberry.argument(description="The webhook endpoint's id.")


def _input(input: WebhookEndpointInput) -> endpoints.EndpointInput:
    return endpoints.EndpointInput(
        url=input.url, events=list(input.events), enabled=input.enabled is not False
    )


def _payload(
    endpoint: WebhookEndpointModel | None, errors: list[UserError], secret: str | None = None
) -> WebhookEndpointPayload:
    return WebhookEndpointPayload(
        errors=errors,
        endpoint=WebhookEndpoint.from_model(endpoint) if endpoint else None,
        secret=secret,
    )


def _with_secret(
    made: endpoints.WithSecret | None, errors: list[UserError]
) -> WebhookEndpointPayload:
    if made is None:
        return _payload(None, errors)
    return _payload(made.endpoint, errors, made.secret)


@strawberry.type
class WebhookMutations:
    @mutation(
        description="Registers a webhook endpoint; the answer carries its signing secret, "
        "shown this once. Nothing is saved on error (INVALID_URL, HOST_NOT_ALLOWED, "
        "INVALID_EVENTS, WEBHOOK_LIMIT_REACHED).",
        permission_classes=admins,
    )
    async def create_webhook_endpoint(
        self,
        info: Info,
        input: Annotated[
            WebhookEndpointInput, strawberry.argument(description="The endpoint to register.")
        ],
    ) -> WebhookEndpointPayload:
        context = info.context
        return _with_secret(
            *await attempt(
                context,
                endpoints.create_endpoint(
                    context.scope, _input(input), context.settings, context.require_staff()
                ),
            )
        )

    @mutation(
        description="Replaces an endpoint's URL, events and enabled flag (its secret stays); "
        "the same rules as createWebhookEndpoint. Enabling it clears disabledReason.",
        permission_classes=admins,
    )
    async def update_webhook_endpoint(
        self,
        info: Info,
        id: Annotated[strawberry.ID, ID_ARGUMENT],
        input: Annotated[
            WebhookEndpointInput, strawberry.argument(description="What the endpoint becomes.")
        ],
    ) -> WebhookEndpointPayload:
        context = info.context
        return _payload(
            *await attempt(
                context,
                endpoints.update_endpoint(
                    context.scope,
                    ids.decode(id, "WebhookEndpoint"),
                    _input(input),
                    context.settings,
                    context.require_staff(),
                ),
            )
        )

    @mutation(
        description="Deletes an endpoint and its deliveries: nothing more is sent to it. "
        "Answers the endpoint as it was.",
        permission_classes=admins,
    )
    async def delete_webhook_endpoint(
        self, info: Info, id: Annotated[strawberry.ID, ID_ARGUMENT]
    ) -> WebhookEndpointPayload:
        context = info.context
        return _payload(
            *await attempt(
                context,
                endpoints.delete_endpoint(
                    context.scope, ids.decode(id, "WebhookEndpoint"), context.require_staff()
                ),
            )
        )

    @mutation(
        description="Gives an endpoint a new signing secret, shown this once. For 24 hours "
        "requests carry signatures by the new and the previous secret (space-separated in "
        "webhook-signature), so the receiver can switch without missing one.",
        permission_classes=admins,
    )
    async def rotate_webhook_secret(
        self, info: Info, id: Annotated[strawberry.ID, ID_ARGUMENT]
    ) -> WebhookEndpointPayload:
        context = info.context
        return _with_secret(
            *await attempt(
                context,
                endpoints.rotate_secret(
                    context.scope,
                    ids.decode(id, "WebhookEndpoint"),
                    context.settings,
                    context.require_staff(),
                ),
            )
        )

    @mutation(
        description="Sends a delivery again now, with the same webhook-id (receivers that "
        "already have it drop the repeat), whatever its status; a failure is retried on a "
        "fresh schedule. ENDPOINT_DISABLED while its endpoint is disabled.",
        permission_classes=admins,
    )
    async def redeliver_webhook(
        self,
        info: Info,
        delivery_id: Annotated[
            strawberry.ID, strawberry.argument(description="The webhook delivery's id.")
        ],
    ) -> WebhookDeliveryPayload:
        context = info.context
        row, errors = await attempt(
            context,
            endpoints.redeliver(
                context.scope,
                ids.decode(delivery_id, "WebhookDelivery"),
                context.require_staff(),
            ),
        )
        return WebhookDeliveryPayload(
            errors=errors, delivery=WebhookDelivery.from_model(row) if row else None
        )
