"""The second factor of a sign-in: what a person must answer, the challenge that asks it,
and the check of the answer.

A challenge's id is 256 random bits handed to the client; only its SHA-256 is stored. The
mailed code (6 digits) is stored as SHA-256 of the challenge id and the code, so the table
alone does not give the code away (the id is needed, and it is nowhere at rest). A challenge
lives 10 minutes, takes 5 tries and succeeds once. A wrong code, an expired or used challenge
and one that never existed take the same steps (one UPDATE, one SELECT, one comparison) and
give the same answer.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.expressions import F

from models import (
    Firm,
    PortalUser,
    SecondFactorChallenge,
    SecondFactorRequirement,
    SignInThrottle,
    StaffMember,
)
from portico.settings import Settings
from services.firm import authenticators
from services.outbound import outbox
from services.shared.errors import ErrorCode, InputError, input_error
from services.shared.sessions import now
from services.shared.tokens import hash_token, new_token

CODE_TTL = timedelta(minutes=10)
MAX_TRIES = 5
CODE_DIGITS = 6
EMAIL_CODE, AUTHENTICATOR, RECOVERY_CODE = "EMAIL_CODE", "AUTHENTICATOR", "RECOVERY_CODE"
AUTHENTICATOR_METHODS = [AUTHENTICATOR, RECOVERY_CODE]
_ORDER = list(SecondFactorRequirement)  # NONE < EMAIL_CODE < AUTHENTICATOR
INVALID = "The code is wrong or has expired. Sign in again for a new one."

Person = StaffMember | PortalUser


@dataclass(frozen=True)
class Challenge:
    """What the client is told: the id to answer with, how, and until when."""

    id: str
    methods: list[str]
    expires_at: datetime


@dataclass(frozen=True)
class Origin:
    """Where a sign-in comes from: network address, browser, and the device cookie."""

    address: str | None = None
    user_agent: str = ""
    device: str | None = None


def owner(person: Person) -> dict[str, int]:
    """The filter naming `person`'s rows in the two-factor tables."""
    if isinstance(person, StaffMember):
        return {"staff_member_id": person.pk}
    return {"portal_user_id": person.pk}


def stricter(*levels: SecondFactorRequirement) -> SecondFactorRequirement:
    return max(levels, key=_ORDER.index)


def requirement(firm: Firm, person: Person, at: datetime) -> SecondFactorRequirement:
    """The firm's rule for staff or clients from its start date on; for staff, the stricter
    of it and the member's own (which holds at once: an admin chose it for this one person)."""
    if isinstance(person, StaffMember):
        firm_level, own = firm.staff_second_factor, person.second_factor
    else:
        firm_level, own = firm.client_second_factor, SecondFactorRequirement.NONE
    if firm.second_factor_from is not None and at < firm.second_factor_from:
        firm_level = SecondFactorRequirement.NONE
    return stricter(SecondFactorRequirement(firm_level), SecondFactorRequirement(own))


async def methods_for(person: Person) -> list[str]:
    """How `person` must prove a sign-in: an enrolled authenticator always (they chose it),
    else a mailed code when required (also when an authenticator is required and none is
    enrolled yet: the firm's switch must not lock them out), else nothing."""
    if await authenticators.confirmed(person) is not None:
        return list(AUTHENTICATOR_METHODS)
    firm = await Firm.get(pk=person.firm_id)
    if requirement(firm, person, now()) is SecondFactorRequirement.NONE:
        return []
    return [EMAIL_CODE]


def _code_hash(challenge_id: str, code: str) -> str:
    return hash_token(f"{challenge_id}\0{code}")


async def open_challenge(
    person: Person,
    methods: list[str],
    throttle_key: str,
    current_account_id: int | None,
    settings: Settings,
) -> Challenge:
    """Stores a challenge (and queues the code's mail) in the caller's transaction."""
    challenge_id, token_hash = new_token()
    expires_at = now() + CODE_TTL
    code_hash = None
    if EMAIL_CODE in methods:
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        code_hash = _code_hash(challenge_id, code)
        firm = await Firm.get(pk=person.firm_id)
        await outbox.enqueue(
            firm_id=firm.pk,
            firm_name=firm.name,
            to=person.email,
            template="sign_in_code",
            context={"firm_name": firm.name, "code": code, "expires_at": expires_at},
            kind="SIGN_IN_CODE",
            settings=settings,
        )
    # Expired challenges are of no use: gone at the person's next one.
    await SecondFactorChallenge.filter(**owner(person), expires_at__lt=now()).delete()
    await SecondFactorChallenge.create(
        firm_id=person.firm_id,
        **owner(person),
        token_hash=token_hash,
        code_hash=code_hash,
        methods=",".join(methods),
        throttle_key=throttle_key,
        current_account_id=current_account_id,
        expires_at=expires_at,
    )
    return Challenge(challenge_id, methods, expires_at)


def invalid() -> InputError:
    return input_error(ErrorCode.SECOND_FACTOR_INVALID, INVALID, "code")


def too_many() -> InputError:
    return input_error(
        ErrorCode.TOO_MANY_ATTEMPTS, "Too many wrong codes. Sign in again for a new one.", "code"
    )


async def redeem(
    challenge_id: str,
    code: str,
    on_wrong: Callable[[str], Awaitable[None]],
    settings: Settings,
) -> SecondFactorChallenge:
    """Claims the challenge if `code` answers it; `on_wrong(throttle_key)` counts a wrong
    code of a live challenge against the person's sign-in throttle."""
    token_hash = hash_token(challenge_id)
    at = now()
    # The try is counted before the code is checked, so parallel guesses cannot pass 5.
    counted = await SecondFactorChallenge.filter(
        token_hash=token_hash, used_at=None, tries__lt=MAX_TRIES, expires_at__gt=at
    ).update(tries=F("tries") + 1)
    row = await SecondFactorChallenge.get_or_none(token_hash=token_hash)
    if not counted or row is None:
        if row is not None and row.used_at is None and row.expires_at > at:
            raise too_many()
        # The same work as a wrong code: the lock check, a comparison, and the statements of
        # counting it on the person's throttle row (which their sign-in made), on a key of no
        # row.
        nobody = hash_token(f"second-factor\0{challenge_id}")
        await SignInThrottle.get_or_none(key=nobody)
        _compare(_code_hash(challenge_id, code), None)
        await SignInThrottle.filter(key=nobody).update(failures=F("failures") + 1)
        await SignInThrottle.get_or_none(key=nobody)
        raise invalid()
    # While the person's sign-in throttle is locked no code is checked, on any of their
    # challenges: each wrong code counts on it, so all their challenges together get the
    # sign-in's few guesses, not five each.
    throttle = await SignInThrottle.get_or_none(key=row.throttle_key)
    if throttle is not None and throttle.locked_until is not None and throttle.locked_until > at:
        raise too_many()
    if not await _answers(settings, row, challenge_id, code):
        await on_wrong(row.throttle_key)
        raise too_many() if row.tries >= MAX_TRIES else invalid()
    claimed = await SecondFactorChallenge.filter(pk=row.pk, used_at=None).update(used_at=now())
    if not claimed:  # a parallel right answer won
        raise invalid()
    return row


async def _answers(
    settings: Settings, row: SecondFactorChallenge, challenge_id: str, code: str
) -> bool:
    methods = row.methods.split(",")
    if EMAIL_CODE in methods:
        return _compare(_code_hash(challenge_id, code.strip()), row.code_hash)
    return await authenticators.check_any(settings, await person_of(row), code)


def _compare(given: str, stored: str | None) -> bool:
    return hmac.compare_digest(given, stored or "0" * 64) and stored is not None


async def person_of(row: SecondFactorChallenge) -> Person:
    """The staff member or portal user a challenge was made for."""
    if row.staff_member_id is not None:
        return await StaffMember.get(pk=row.staff_member_id)
    assert row.portal_user_id is not None
    return await PortalUser.get(pk=row.portal_user_id)
