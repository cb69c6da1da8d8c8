"""Bounces: a delivery status notification (DSN, RFC 3464) for an outbox message marks it FAILED.

A DSN is a `multipart/report; report-type=delivery-status` message. The sync recognises one by
its Content-Type in the header step (`is_dsn`), before it decides what to download: a DSN
rarely has a participant with EMAIL SYNC (it comes from MAILER-DAEMON to the firm's own
address), so it is downloaded for this alone, at most DSN_MAX_BYTES of it (the report comes
before the returned message), and stored only when a participant syncs, as any message.

`apply` reads the report with the stdlib email package:
- the original Message-ID from the returned headers (a text/rfc822-headers part), else the
  returned message (message/rfc822), else the DSN's own In-Reply-To and References;
- each recipient's Status and Diagnostic-Code from the message/delivery-status part.
Only a permanent failure (a Status of 5.x.x) counts: the OutboundEmail of the same firm with
that Message-ID becomes FAILED with "Bounced: <status> <diagnostic>" as its last_error. A
delayed (4.x.x) or successful (2.x.x) notice changes nothing, nor does a DSN whose original is
not in the firm's outbox, nor one for a row already FAILED or CANCELLED.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import compat32

from models import DeliveryStatus, OutboundEmail
from services.shared.scope import FirmScope

log = logging.getLogger(__name__)

DSN_MAX_BYTES = 256 * 1024  # read of a DSN kept for its report alone
MAX_ERROR = 1000  # characters of last_error
_MSG_ID = re.compile(r"<[^<>\s]+>")
_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")


@dataclass(frozen=True)
class Bounce:
    """What a DSN says: the Message-IDs it is about, and the first permanent failure."""

    message_ids: list[str]
    status: str | None  # e.g. "5.1.1"; None: no permanent failure reported
    diagnostic: str

    @property
    def reason(self) -> str:
        return f"Bounced: {self.status} {self.diagnostic}".strip()[:MAX_ERROR]


def is_dsn(headers: bytes) -> bool:
    """Whether these header lines (at least Content-Type) are those of a DSN."""
    try:
        msg = BytesHeaderParser(policy=compat32).parsebytes(headers)
        return (
            msg.get_content_type() == "multipart/report"
            and str(msg.get_param("report-type", "")).lower() == "delivery-status"
        )
    except Exception:  # unreadable headers: not a DSN as far as anyone can tell
        return False


def read(raw: bytes) -> Bounce | None:
    """The DSN's report; None when `raw` is no DSN (or carries no report)."""
    msg = message_from_bytes(raw, policy=compat32)
    if not (
        msg.get_content_type() == "multipart/report"
        and str(msg.get_param("report-type", "")).lower() == "delivery-status"
    ):
        return None
    status, diagnostic = _permanent_failure(msg)
    return Bounce(_original_ids(msg), status, diagnostic)


async def apply(scope: FirmScope, raw: bytes) -> int:
    """Marks the outbox message this DSN reports as permanently failed FAILED; how many rows
    (0 or 1) changed. Never raises for a malformed message."""
    try:
        bounce = read(raw)
    except Exception:
        log.warning("firm %s: an unreadable delivery status notification", scope.firm_id)
        return 0
    if bounce is None or bounce.status is None or not bounce.message_ids:
        return 0
    changed = await (
        scope.query(OutboundEmail)
        .filter(message_id__in=bounce.message_ids)
        .exclude(status__in=[DeliveryStatus.FAILED, DeliveryStatus.CANCELLED])
        .update(status=DeliveryStatus.FAILED, last_error=bounce.reason, lease_until=None)
    )
    if changed:
        log.info("firm %s: %s bounced (%s)", scope.firm_id, bounce.message_ids, bounce.status)
    return changed


def _permanent_failure(msg: Message) -> tuple[str | None, str]:
    """The first recipient's 5.x.x Status and its Diagnostic-Code (or Action)."""
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _status_blocks(part):
            match = _STATUS.search(str(block.get("Status", "")))
            if match and match.group(1) == "5":
                diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
                if not diagnostic:
                    diagnostic = str(block.get("Action", "failed")).strip()
                return match.group(0), diagnostic
    return None, ""


def _status_blocks(part: Message) -> list[Message]:
    """The per-message and per-recipient field blocks of a message/delivery-status part."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the stdlib parses it into one Message per block
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [HeaderParser(policy=compat32).parsestr(b) for b in re.split(r"\r?\n\r?\n", text)]


def _original_ids(msg: Message) -> list[str]:
    """The Message-ID of the message that bounced: from the returned headers or message,
    else what the DSN answers (In-Reply-To, References)."""
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "text/rfc822-headers":
            payload = part.get_payload(decode=True) or b""
            found = _ids(BytesHeaderParser(policy=compat32).parsebytes(payload).get("Message-ID"))
        elif kind == "message/rfc822":
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else None
            found = _ids(inner.get("Message-ID")) if isinstance(inner, Message) else []
        else:
            continue
        if found:
            return found
    return _ids(msg.get("In-Reply-To")) + _ids(msg.get("References"))


def _ids(value: object) -> list[str]:
    return _MSG_ID.findall(str(value)) if value else []
