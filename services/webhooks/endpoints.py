"""The firm's webhook endpoints (owners and admins): registering, changing, deleting one,
rotating its secret, and sending one of its deliveries again.

Each endpoint has a secret (services/webhooks/signing) stored encrypted
(crypto.fernet(settings, "webhook-secret")), answered only by the call that made it (create
or rotate) and never readable again. Rotating keeps the previous secret signing beside the
new one for ROTATION_OVERLAP, so receivers can switch without dropping a request. Every
input problem is reported at once and nothing is written on failure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tortoise.expressions import F
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models import Firm, StaffMember, WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from portico.settings import Settings
from services.shared import crypto
from services.shared.errors import ErrorCode, InputError, UserError, input_error
from services.shared.permissions import require_staff_admin
from services.shared.scope import FirmScope
from services.shared.wakeups import WEBHOOKS
from services.webhooks import signing, urls
from services.webhooks.events import WebhookEvent

log = logging.getLogger(__name__)

SECRET_PURPOSE = "webhook-secret"
MAX_ENDPOINTS = 10  # per firm: each event is sent to every endpoint that wants it
ROTATION_OVERLAP = timedelta(hours=24)


@dataclass(frozen=True)
class EndpointInput:
    """createWebhookEndpoint's and updateWebhookEndpoint's input."""

    url: str
    events: Sequence[WebhookEvent]
    enabled: bool = True


@dataclass(frozen=True)
class WithSecret:
    """An endpoint and the secret just made for it (shown once); never in a repr."""

    endpoint: WebhookEndpoint
    secret: str = field(repr=False)


def endpoints(scope: FirmScope) -> QuerySet[WebhookEndpoint]:
    """The firm's endpoints, oldest first."""
    return scope.query(WebhookEndpoint).order_by("created_at", "id")


async def create_endpoint(
    scope: FirmScope, new: EndpointInput, settings: Settings, actor: StaffMember
) -> WithSecret:
    """Registers an endpoint with a fresh secret, unless the firm has MAX_ENDPOINTS."""
    require_staff_admin(actor)
    url, events = await _clean(new, settings)
    secret = signing.new_secret()
    async with in_transaction():
        # Counted under a lock on the firm's row (PostgreSQL), so two creates at once cannot
        # both take the last place.
        await Firm.filter(id=scope.firm_id).select_for_update().first()
        taken = await scope.query(WebhookEndpoint).count()
        if taken >= MAX_ENDPOINTS:
            raise input_error(
                ErrorCode.WEBHOOK_LIMIT_REACHED,
                f"A firm has at most {MAX_ENDPOINTS} webhook endpoints: delete one first.",
            )
        endpoint = await WebhookEndpoint.create(
            firm_id=scope.firm_id,
            url=url,
            events=[e.value for e in events],
            enabled=new.enabled,
            secret_encrypted=encrypt_secret(settings, secret),
        )
    log.info("webhook endpoint %s created (firm %s)", endpoint.pk, scope.firm_id)
    return WithSecret(endpoint, secret)


async def update_endpoint(
    scope: FirmScope,
    endpoint_id: int | None,
    new: EndpointInput,
    settings: Settings,
    actor: StaffMember,
) -> WebhookEndpoint:
    """Replaces the URL, the events and whether it is enabled; the secret stays. Enabling an
    endpoint clears the reason it was disabled, and enabling it or changing its URL forgets
    its failures so far (services/webhooks/delivery disables after days of them)."""
    require_staff_admin(actor)
    endpoint = await scope.get(WebhookEndpoint, endpoint_id, "id")
    url, events = await _clean(new, settings)
    values: dict[str, object] = {
        "url": url,
        "events": [e.value for e in events],
        "enabled": new.enabled,
    }
    if new.enabled:
        values["disabled_reason"] = None
    if (new.enabled and not endpoint.enabled) or url != endpoint.url:
        values["failing_since"] = None  # a fresh start: past failures do not disable it again
    if not await scope.query(WebhookEndpoint).filter(id=endpoint.pk).update(**values):
        raise _not_found()  # deleted meanwhile
    log.info("webhook endpoint %s updated (firm %s)", endpoint.pk, scope.firm_id)
    if new.enabled and not endpoint.enabled:
        WEBHOOKS.notify()  # the deliveries that waited while it was disabled are due
    return await scope.get(WebhookEndpoint, endpoint.pk, "id")


async def delete_endpoint(
    scope: FirmScope, endpoint_id: int | None, actor: StaffMember
) -> WebhookEndpoint:
    """Removes the endpoint and its deliveries (nothing more is sent to it); the row as it was."""
    require_staff_admin(actor)
    endpoint = await scope.get(WebhookEndpoint, endpoint_id, "id")
    async with in_transaction():
        # The database cascades too; said here, it holds whatever the connection's
        # foreign-key settings.
        await scope.query(WebhookDelivery).filter(endpoint_id=endpoint.pk).delete()
        if not await scope.query(WebhookEndpoint).filter(id=endpoint.pk).delete():
            raise _not_found()  # deleted meanwhile
    log.info("webhook endpoint %s deleted (firm %s)", endpoint.pk, scope.firm_id)
    return endpoint


async def rotate_secret(
    scope: FirmScope,
    endpoint_id: int | None,
    settings: Settings,
    actor: StaffMember,
    now: datetime | None = None,
) -> WithSecret:
    """A new secret; the one it replaces keeps signing beside it for ROTATION_OVERLAP (a
    secret rotated earlier and still in its overlap stops signing now)."""
    require_staff_admin(actor)
    endpoint = await scope.get(WebhookEndpoint, endpoint_id, "id")
    secret = signing.new_secret()
    when = now or datetime.now(UTC)
    async with in_transaction():
        locked = await scope.query(WebhookEndpoint).filter(id=endpoint.pk).select_for_update()
        if not locked:
            raise _not_found()
        await (
            scope.query(WebhookEndpoint)
            .filter(id=endpoint.pk)
            .update(
                secret_encrypted=encrypt_secret(settings, secret),
                previous_secret_encrypted=locked[0].secret_encrypted,
                previous_secret_expires_at=when + ROTATION_OVERLAP,
            )
        )
    log.info("webhook endpoint %s secret rotated (firm %s)", endpoint.pk, scope.firm_id)
    return WithSecret(await scope.get(WebhookEndpoint, endpoint.pk, "id"), secret)


async def redeliver(
    scope: FirmScope, delivery_id: int | None, actor: StaffMember, now: datetime | None = None
) -> WebhookDelivery:
    """Sends a delivery again now, with the same webhook-id, whatever its status: it is
    PENDING again with a fresh retry schedule (its attempts so far stay counted and kept).
    Refused (ENDPOINT_DISABLED) while its endpoint is disabled."""
    require_staff_admin(actor)
    row = await scope.get(WebhookDelivery, delivery_id, "deliveryId")
    endpoint = await scope.query(WebhookEndpoint).filter(id=row.endpoint_id).first()
    if endpoint is None or not endpoint.enabled:
        raise input_error(
            ErrorCode.ENDPOINT_DISABLED,
            "The delivery's endpoint is disabled: enable it first.",
            "deliveryId",
        )
    changed = await (
        scope.query(WebhookDelivery)
        .filter(id=row.pk)
        .update(
            status=WebhookDeliveryStatus.PENDING,
            next_attempt_at=now or datetime.now(UTC),
            schedule_start=F("attempts"),
        )
    )
    if not changed:
        raise input_error(ErrorCode.NOT_FOUND, "No such WebhookDelivery.", "deliveryId")
    log.info("webhook delivery %s queued again (firm %s)", row.pk, scope.firm_id)
    WEBHOOKS.notify()
    return await scope.get(WebhookDelivery, row.pk, "deliveryId")


def signing_secrets(
    settings: Settings, endpoint: WebhookEndpoint, now: datetime | None = None
) -> list[str]:
    """The secrets that sign a request to the endpoint now: the current one, then the
    previous one while its overlap lasts."""
    found = [decrypt_secret(settings, endpoint.secret_encrypted)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires and (now or datetime.now(UTC)) < expires:
        found.append(decrypt_secret(settings, endpoint.previous_secret_encrypted))
    return found


def encrypt_secret(settings: Settings, secret: str) -> str:
    return crypto.fernet(settings, SECRET_PURPOSE).encrypt(secret.encode()).decode("ascii")


def decrypt_secret(settings: Settings, stored: str) -> str:
    """A stored secret in clear, for signing (never for showing)."""
    return crypto.fernet(settings, SECRET_PURPOSE).decrypt(stored.encode("ascii")).decode()


async def _clean(new: EndpointInput, settings: Settings) -> tuple[str, list[WebhookEvent]]:
    """The URL as stored and the events, or every problem with them at once."""
    errors: list[UserError] = []
    events = list(new.events)
    if not events:
        errors.append(
            UserError(ErrorCode.INVALID_EVENTS, "Name at least one event.", ("input", "events"))
        )
    elif len(set(events)) != len(events):
        twice = sorted({e.name for e in events if events.count(e) > 1})
        errors.append(
            UserError(
                ErrorCode.INVALID_EVENTS,
                f"Each event may be named once ({', '.join(twice)} given twice).",
                ("input", "events"),
            )
        )
    url = new.url
    try:
        urls.parse_url(new.url, settings)  # syntax first: no lookup when anything is wrong
    except InputError as exc:
        errors.extend(exc.errors)
    if errors:
        raise InputError(*errors)
    url = await urls.check_url(new.url, settings)
    return url, events


def _not_found() -> InputError:
    return input_error(ErrorCode.NOT_FOUND, "No such WebhookEndpoint.", "id")
