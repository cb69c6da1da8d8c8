"""The event types an endpoint may subscribe to: each member's value is its name on the wire
(the body's "type"), lower-case with dots."""

from __future__ import annotations

from enum import StrEnum


class WebhookEvent(StrEnum):
    INVITATION_SENT = "invitation.sent"
    INVITATION_ACCEPTED = "invitation.accepted"
    PORTAL_ACCESS_REVOKED = "portal_access.revoked"
    EMAIL_FLAGS_CHANGED = "email_flags.changed"
    DELIVERY_FAILED = "delivery.failed"
    MESSAGE_SYNCED = "message.synced"
    DOCUMENT_UPLOADED = "document.uploaded"
    CLIENT_SIGNED_IN = "client.signed_in"
