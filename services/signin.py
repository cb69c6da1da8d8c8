"""Staff sign-in: one answer for wrong firm, email or password, and a throttle per account."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from models import Session, SignInThrottle, StaffMember
from services import passwords, sessions
from services.errors import input_error

INVALID_CREDENTIALS = "Firm, email or password is wrong."


@dataclass(frozen=True)
class SignInPolicy:
    session_ttl: timedelta
    max_failures: int
    lockout_seconds: int


@dataclass(frozen=True)
class SignedIn:
    token: str
    session: Session
    staff: StaffMember


def _throttle_key(firm_slug: str, email: str) -> str:
    raw = f"{firm_slug.strip().lower()}\0{email.strip().lower()}"
    return hashlib.sha256(raw.encode()).hexdigest()


async def staff_sign_in(
    firm_slug: str, email: str, password: str, policy: SignInPolicy
) -> SignedIn:
    key = _throttle_key(firm_slug, email)
    throttle = await SignInThrottle.get_or_none(key=key)
    if throttle and throttle.locked_until and throttle.locked_until > sessions.now():
        raise input_error(
            "TOO_MANY_ATTEMPTS", "Too many failed sign-ins. Try again in a few minutes."
        )

    staff = await StaffMember.filter(
        firm__slug=firm_slug.strip().lower(),
        email_normalized=email.strip().lower(),
        active=True,
    ).first()
    # verify_password always runs argon2, also when there is no such member.
    if not passwords.verify_password(staff.password_hash if staff else None, password):
        await _record_failure(key, throttle, policy)
        raise input_error("INVALID_CREDENTIALS", INVALID_CREDENTIALS)
    assert staff is not None and staff.password_hash is not None

    if throttle:
        await throttle.delete()
    if passwords.needs_rehash(staff.password_hash):
        staff.password_hash = passwords.hash_password(password)
        await staff.save(update_fields=["password_hash"])
    token, session = await sessions.start_staff_session(staff, policy.session_ttl)
    return SignedIn(token, session, staff)


async def _record_failure(key: str, throttle: SignInThrottle | None, policy: SignInPolicy) -> None:
    if throttle is None:
        throttle, _ = await SignInThrottle.get_or_create(key=key)
    throttle.failures += 1
    over = throttle.failures - policy.max_failures
    if over >= 0:
        # 30 s after the limit, doubling with each further failure, up to the lockout ceiling.
        delay = min(30 * 2**over, policy.lockout_seconds)
        throttle.locked_until = sessions.now() + timedelta(seconds=delay)
    await throttle.save()
