"""Signed webhooks: the firm's endpoints, one delivery row per event sent to one of them, and
one row per attempt of a delivery."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from models.firms import Firm


class WebhookDeliveryStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class WebhookEndpoint(Model):
    """An HTTP(S) URL of the firm that receives the events it names, signed with its secret.
    The secret is stored encrypted and shown only when created or rotated."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="webhook_endpoints", on_delete=fields.CASCADE
    )
    firm_id: int
    url = fields.CharField(max_length=2048)
    events = fields.JSONField(default=list, description="event types on the wire, in order")
    enabled = fields.BooleanField(default=True)
    disabled_reason = fields.TextField(null=True)
    secret_encrypted = fields.TextField(description="the whsec_ secret, encrypted")
    previous_secret_encrypted = fields.TextField(
        null=True, description="the secret before the last rotation, still signing until expiry"
    )
    previous_secret_expires_at = fields.DatetimeField(null=True)
    failing_since = fields.DatetimeField(
        null=True, description="the first failed attempt since the last success"
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "webhook_endpoint"
        indexes = (("firm_id", "created_at", "id"),)


class WebhookDelivery(Model):
    """One event for one endpoint: its attempts so far and when the next is due."""

    id = fields.IntField(primary_key=True)
    firm: fields.ForeignKeyRelation[Firm] = fields.ForeignKeyField(
        "portico.Firm", related_name="webhook_deliveries", on_delete=fields.CASCADE
    )
    firm_id: int
    endpoint: fields.ForeignKeyRelation[WebhookEndpoint] = fields.ForeignKeyField(
        "portico.WebhookEndpoint", related_name="deliveries", on_delete=fields.CASCADE
    )
    endpoint_id: int
    event_id = fields.CharField(
        max_length=64, unique=True, description="the webhook-id header, receivers dedupe by it"
    )
    event = fields.CharField(max_length=64, description="the event type on the wire")
    payload = fields.JSONField(description="the JSON body sent")
    status = fields.CharEnumField(
        WebhookDeliveryStatus, max_length=16, default=WebhookDeliveryStatus.PENDING
    )
    attempts = fields.IntField(default=0)
    schedule_start = fields.IntField(
        default=0, description="attempts made before the current retry schedule began"
    )
    last_status_code = fields.IntField(null=True)
    last_error = fields.TextField(null=True)
    next_attempt_at = fields.DatetimeField(null=True)
    lease_until = fields.DatetimeField(null=True, description="claimed by a worker until then")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "webhook_delivery"
        indexes = (("endpoint_id", "created_at", "id"), ("status", "next_attempt_at"))


class WebhookAttempt(Model):
    """One POST of a delivery: when, how long, and what came back."""

    id = fields.IntField(primary_key=True)
    delivery: fields.ForeignKeyRelation[WebhookDelivery] = fields.ForeignKeyField(
        "portico.WebhookDelivery", related_name="attempt_rows", on_delete=fields.CASCADE
    )
    delivery_id: int
    started_at = fields.DatetimeField()
    duration_ms = fields.IntField()
    status_code = fields.IntField(null=True, description="null: no HTTP answer")
    error = fields.TextField(null=True)
    succeeded = fields.BooleanField()

    class Meta:
        table = "webhook_attempt"
        indexes = (("delivery_id", "id"),)
