"""Devices a person has signed in from, and the notice of a sign-in from a new one.

A device is a browser (the HttpOnly `portico_device` cookie) or a client that sends back the
`deviceToken` a sign-in answered (scripts, apps without cookies). Only the token's SHA-256
is stored. A sign-in from a device this person has not used before mails them the time,
network address and browser, with a link that ends all their sessions. A person's first
device is not "new": there is nothing to compare it with (an invitation's or password link's
first sign-in would otherwise always warn); the newest device is never forgotten, so a
person is "first" only once.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from cryptography.fernet import InvalidToken
from tortoise.transactions import in_transaction

from models import Firm, KnownDevice, PortalUser, Session, StaffMember
from portico.settings import Settings
from services.firm.second_factor import Origin, owner
from services.outbound import outbox
from services.shared import crypto
from services.shared.sessions import now
from services.shared.tokens import hash_token, new_token

DEVICE_TTL = timedelta(days=400)  # the cookie's life (browsers cap cookies at 400 days)
END_LINK_TTL = timedelta(days=7)
END_PURPOSE = "end-sessions-link"
MAX_TOKEN = 256
FORGET_AFTER = timedelta(days=180)  # a device unused this long is forgotten (new again)
MAX_DEVICES = 20  # per person: the ones used longest ago go first

Person = StaffMember | PortalUser


async def recognise(person: Person, origin: Origin, settings: Settings) -> str | None:
    """Notes the device a session starts on. Answers a new device token to set as the
    cookie, or None when the device is known (its last use is updated)."""
    if origin.device and len(origin.device) <= MAX_TOKEN:
        seen = await KnownDevice.filter(
            **owner(person), token_hash=hash_token(origin.device)
        ).update(last_seen_at=now())
        if seen:
            return None
    token, token_hash = new_token()
    async with in_transaction():  # the notice commits with the device it names
        known_before = await KnownDevice.exists(**owner(person))
        row = await KnownDevice.create(
            firm_id=person.firm_id, **owner(person), token_hash=token_hash
        )
        if known_before:
            await _notify(person, origin, settings)
            await _forget_old(person, row.pk)
    return token


async def _forget_old(person: Person, keep: int) -> None:
    """Only at a new device (rare), only this person's rows: devices not seen for
    FORGET_AFTER, and beyond the MAX_DEVICES used last. The new one stays, so a person once
    seen always has a device and is never "first" again."""
    await (
        KnownDevice.filter(**owner(person), last_seen_at__lt=now() - FORGET_AFTER)
        .exclude(pk=keep)
        .delete()
    )
    extra = (
        await KnownDevice.filter(**owner(person))
        .order_by("-last_seen_at", "-id")
        .offset(MAX_DEVICES)
        .limit(1000)
        .values_list("id", flat=True)
    )
    if extra:
        await KnownDevice.filter(pk__in=list(extra)).exclude(pk=keep).delete()


async def _notify(person: Person, origin: Origin, settings: Settings) -> None:
    firm = await Firm.get(pk=person.firm_id)
    await outbox.enqueue(
        firm_id=firm.pk,
        firm_name=firm.name,
        to=person.email,
        template="new_device",
        context={
            "firm_name": firm.name,
            "at": now(),
            "address": origin.address or "unknown",
            "user_agent": outbox.header_text(origin.user_agent, 255) or "unknown",
            "link": end_link(person, settings),
            "link_expires_at": now() + END_LINK_TTL,
        },
        kind="NEW_DEVICE",
        settings=settings,
    )


def end_link(person: Person, settings: Settings) -> str:
    kind = "staff" if isinstance(person, StaffMember) else "client"
    payload = json.dumps({"kind": kind, "id": person.pk}).encode()
    token = crypto.fernet(settings, END_PURPOSE).encrypt(payload).decode()
    return f"{settings.resolved_public_url}/sessions/end?token={token}"


def _opened(token: str, settings: Settings) -> dict | None:
    """The link's person, or None when it is not one we issued or is over a week old."""
    if not token or len(token) > 1024:
        return None
    try:
        payload = crypto.open_link_token(settings, END_PURPOSE, token)
        issued = crypto.fernet(settings, END_PURPOSE).extract_timestamp(token.encode())
    except InvalidToken:
        return None
    if datetime.fromtimestamp(issued, now().tzinfo) < now() - END_LINK_TTL:
        return None
    return json.loads(payload)


def link_works(token: str, settings: Settings) -> bool:
    return _opened(token, settings) is not None


async def end_all_sessions(token: str, settings: Settings) -> int | None:
    """Ends every session of the link's person (None: the link does not work)."""
    person = _opened(token, settings)
    if person is None:
        return None
    column = "staff_member_id" if person["kind"] == "staff" else "portal_user_id"
    return await Session.filter(**{column: person["id"]}, revoked_at=None).update(revoked_at=now())
