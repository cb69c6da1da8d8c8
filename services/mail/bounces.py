"""Bounces: a delivery status notification (DSN, RFC 3464) for an outbox message marks it FAILED.

A DSN is a `multipart/report; report-type=delivery-status` message. The sync recognises one by
its Content-Type in the header step (`is_dsn`), before it decides what to download: a DSN
rarely has a participant with EMAIL SYNC (it comes from MAILER-DAEMON to the firm's own
address), so it is downloaded for this alone, at most DSN_MAX_BYTES of it (the report comes
before the returned message), and stored only when a participant syncs, as any message.

`apply` reads the report with the stdlib email package:
- the original Message-ID: the Message-ID of the returned headers (a text/rfc822-headers
  part) or the returned message (message/rfc822), else the first id of the DSN's own
  In-Reply-To. Never References: anyone in a thread knows all of its ids, so a forged
  "DSN" could name every message of it;
- each recipient's Final-Recipient, Original-Recipient, Status and Diagnostic-Code from the
  message/delivery-status part.
Anyone can send a message that looks like a DSN, so what it may change is narrow: only a
permanent failure (a Status of 5.x.x) counts, and only for the OutboundEmail of the same firm
with that Message-ID that is SENT (a QUEUED or retrying row has not been sent: no bounce can
be about it; FAILED and CANCELLED rows are done) and whose to_address is that failed
recipient's Final-Recipient or Original-Recipient (compared without case). It becomes FAILED
with "Bounced: <status> <diagnostic>" as its last_error. A delayed (4.x.x) or successful
(2.x.x) notice changes nothing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import compat32

from tortoise.transactions import in_transaction

from models import DeliveryStatus, OutboundEmail
from services.shared.scope import FirmScope
from services.webhooks import emit

log = logging.getLogger(__name__)

DSN_MAX_BYTES = 256 * 1024  # read of a DSN kept for its report alone
MAX_ERROR = 1000  # characters of last_error
_MSG_ID = re.compile(r"<[^<>\s]+>")
_REPORT = re.compile(rb"report", re.IGNORECASE)  # in every DSN's Content-Type
_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")


@dataclass(frozen=True)
class Failure:
    """One recipient's permanent failure in a DSN."""

    recipients: frozenset[str]  # Final-Recipient and Original-Recipient, lower case
    status: str  # e.g. "5.1.1"
    diagnostic: str

    @property
    def reason(self) -> str:
        return f"Bounced: {self.status} {self.diagnostic}".strip()[:MAX_ERROR]


@dataclass(frozen=True)
class Bounce:
    """What a DSN says: the Message-ID it is about, and its recipients' permanent failures."""

    message_id: str | None
    failures: list[Failure]

    @property
    def status(self) -> str | None:
        """The first permanent failure's status; None: no permanent failure reported."""
        return self.failures[0].status if self.failures else None

    def failure_for(self, address: str) -> Failure | None:
        """The permanent failure reported for `address` (compared without case), if any."""
        wanted = address.strip().lower()
        return next((f for f in self.failures if wanted in f.recipients), None)


def is_dsn(headers: bytes) -> bool:
    """Whether these header lines (at least Content-Type) are those of a DSN. Header lines
    without the word "report" anywhere are none: most mail is answered without parsing."""
    if _REPORT.search(headers) is None:
        return False
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
    return Bounce(_original_id(msg), _permanent_failures(msg))


async def apply(scope: FirmScope, raw: bytes) -> int:
    """Marks the outbox message this DSN reports as permanently failed FAILED; how many rows
    (0 or 1) changed. Never raises for a malformed message."""
    try:
        bounce = read(raw)
    except Exception:
        log.warning("firm %s: an unreadable delivery status notification", scope.firm_id)
        return 0
    if bounce is None or not bounce.failures or bounce.message_id is None:
        return 0
    sent = await (
        scope.query(OutboundEmail)
        .filter(message_id=bounce.message_id, status=DeliveryStatus.SENT)
        .values_list("id", "to_address")
    )
    changed = 0
    for row_id, to_address in sent:
        failure = bounce.failure_for(to_address)
        if failure is None:
            continue  # not the recipient this message went to
        async with in_transaction():
            failed = await (
                scope.query(OutboundEmail)
                .filter(id=row_id, status=DeliveryStatus.SENT)
                .update(status=DeliveryStatus.FAILED, last_error=failure.reason, lease_until=None)
            )
            if failed:
                row = await OutboundEmail.get(pk=row_id)
                await emit.delivery_failed(row, failure.reason)
        changed += failed
    if changed:
        log.info("firm %s: %s bounced (%s)", scope.firm_id, bounce.message_id, bounce.status)
    return changed


def _permanent_failures(msg: Message) -> list[Failure]:
    """Each recipient block with a 5.x.x Status: its addresses, status and Diagnostic-Code
    (or Action). A block naming no recipient names no row."""
    found: list[Failure] = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _status_blocks(part):
            match = _STATUS.search(str(block.get("Status", "")))
            if not (match and match.group(1) == "5"):
                continue
            recipients = frozenset(
                address
                for name in ("Final-Recipient", "Original-Recipient")
                if (address := _recipient(block.get(name)))
            )
            if not recipients:
                continue
            diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
            if not diagnostic:
                diagnostic = str(block.get("Action", "failed")).strip()
            found.append(Failure(recipients, match.group(0), diagnostic))
    return found


def _recipient(value: object) -> str:
    """The address of a Final-Recipient or Original-Recipient field ("rfc822; a@b.example"),
    lower case; "" when absent."""
    if not value:
        return ""
    text = str(value)
    address = text.split(";", 1)[1] if ";" in text else text
    return address.strip().strip("<>").strip().lower()


def _status_blocks(part: Message) -> list[Message]:
    """The per-message and per-recipient field blocks of a message/delivery-status part."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the stdlib parses it into one Message per block
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [HeaderParser(policy=compat32).parsestr(b) for b in re.split(r"\r?\n\r?\n", text)]


def _original_id(msg: Message) -> str | None:
    """The Message-ID of the message that bounced: from the returned headers or message,
    else the message the DSN answers (the first id of its In-Reply-To; never References)."""
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
            return found[0]
    answered = _ids(msg.get("In-Reply-To"))
    return answered[0] if answered else None


def _ids(value: object) -> list[str]:
    return _MSG_ID.findall(str(value)) if value else []
