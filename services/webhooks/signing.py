"""Standard Webhooks signatures (https://www.standardwebhooks.com): a secret is
"whsec_<base64 key>"; a request carries webhook-id, webhook-timestamp (Unix seconds) and
webhook-signature, "v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}' under the key>".
Several signatures travel space-separated: during a rotation's overlap both the new and the
previous secret sign, so a receiver holding either one verifies."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

PREFIX = "whsec_"
KEY_BYTES = 32  # the spec asks for 24 to 64 random bytes


class BadSecret(ValueError):
    """Not a whsec_ secret with a base64 key."""


def new_secret() -> str:
    """A fresh secret: whsec_ and the base64 of KEY_BYTES random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def key_of(secret: str) -> bytes:
    """The HMAC key a secret holds."""
    if not secret.startswith(PREFIX):
        raise BadSecret("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise BadSecret("a webhook secret's key is base64") from None
    if not key:
        raise BadSecret("a webhook secret's key is empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: str | bytes) -> str:
    """One signature, "v1,<base64>", of the body sent as `msg_id` at `timestamp`."""
    data = body.encode() if isinstance(body, str) else body
    signed = f"{msg_id}.{timestamp}.".encode() + data
    digest = hmac.new(key_of(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(
    secrets_: Sequence[str], msg_id: str, timestamp: int, body: str | bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with each secret (current one first)."""
    if not secrets_:
        raise BadSecret("at least one secret signs")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets_),
    }
