"""Authenticator apps (TOTP, RFC 6238) and their recovery codes.

The TOTP secret must be read back to check codes, so it is encrypted at rest (a key derived
for this purpose from PORTICO_SECRET_KEY). A code is accepted once: the step it belongs to is
remembered, and an older or equal step is refused (a code seen over a shoulder cannot be
replayed). Recovery codes are 80 random bits each, shown once, only their SHA-256 kept.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime

import pyotp
import segno
from tortoise.transactions import in_transaction

from models import Authenticator, Firm, PortalUser, RecoveryCode, StaffMember
from portico.settings import Settings
from services.shared import crypto
from services.shared.errors import ErrorCode, input_error
from services.shared.sessions import now
from services.shared.tokens import hash_token

CRYPTO_PURPOSE = "totp-secret"
RECOVERY_CODES = 10
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # 32 symbols, no i, l, o, u
_DRIFT_STEPS = 1  # a code of the step before or after is accepted (clock drift)

Person = StaffMember | PortalUser


def _owner(person: Person) -> dict[str, int]:
    if isinstance(person, StaffMember):
        return {"staff_member_id": person.pk}
    return {"portal_user_id": person.pk}


async def confirmed(person: Person) -> Authenticator | None:
    return await Authenticator.filter(**_owner(person), confirmed_at__isnull=False).first()


def _totp(settings: Settings, row: Authenticator) -> pyotp.TOTP:
    secret = crypto.fernet(settings, CRYPTO_PURPOSE).decrypt(row.secret_encrypted.encode())
    return pyotp.TOTP(secret.decode())


async def start_enrollment(person: Person, settings: Settings) -> tuple[str, str]:
    """A new secret (replacing any unconfirmed one): its otpauth:// URI and a QR code of it
    as inline SVG, rendered here (the secret never goes to another service). A confirmed
    one stays until this one is confirmed (services/firm/enrollment.start checks the code
    that allows replacing it)."""
    secret = pyotp.random_base32()
    firm = await Firm.get(pk=person.firm_id)
    async with in_transaction():
        await Authenticator.filter(**_owner(person), confirmed_at=None).delete()
        await Authenticator.create(
            firm_id=person.firm_id,
            **_owner(person),
            secret_encrypted=crypto.fernet(settings, CRYPTO_PURPOSE)
            .encrypt(secret.encode())
            .decode(),
        )
    uri = pyotp.TOTP(secret).provisioning_uri(name=person.email, issuer_name=firm.name)
    return uri, segno.make(uri, error="m").svg_inline(scale=4)


async def confirm_enrollment(person: Person, code: str, settings: Settings) -> list[str]:
    """The first right code turns the pending secret on, in place of any confirmed one (its
    recovery codes go with it); the answer is ten recovery codes."""
    row = await Authenticator.filter(**_owner(person), confirmed_at=None).first()
    if row is None:
        raise input_error(
            ErrorCode.SECOND_FACTOR_INVALID,
            "Start the authenticator's set-up first (startAuthenticatorEnrollment).",
            "code",
        )
    if not await _use_totp(settings, row, code):
        raise _wrong()
    codes = [_recovery_code() for _ in range(RECOVERY_CODES)]
    async with in_transaction():
        claimed = await Authenticator.filter(pk=row.pk, confirmed_at=None).update(
            confirmed_at=now()
        )
        if not claimed:
            raise _wrong()
        await Authenticator.filter(**_owner(person)).exclude(pk=row.pk).delete()
        await RecoveryCode.bulk_create(
            [RecoveryCode(authenticator_id=row.pk, code_hash=_recovery_hash(c)) for c in codes]
        )
    return codes


async def remove(person: Person, code: str, settings: Settings) -> None:
    """Removes the authenticator, given a fresh code from it or an unused recovery code."""
    row = await confirmed(person)
    if row is None:
        raise input_error(ErrorCode.NOT_FOUND, "No authenticator is set up.")
    if not await check(settings, row, code):
        raise _wrong()
    await Authenticator.filter(pk=row.pk).delete()  # its recovery codes go with it


async def check_any(settings: Settings, person: Person, code: str) -> bool:
    """Whether `code` is a fresh authenticator code or an unused recovery code of `person`
    (using it up)."""
    row = await confirmed(person)
    return row is not None and await check(settings, row, code)


async def check(settings: Settings, row: Authenticator, code: str) -> bool:
    code = code.strip().replace(" ", "")
    if code.isdigit() and len(code) == 6:
        return await _use_totp(settings, row, code)
    return await _use_recovery_code(row, code)


async def _use_totp(settings: Settings, row: Authenticator, code: str) -> bool:
    totp = _totp(settings, row)
    step = _step(now(), totp.interval)
    for candidate in range(step - _DRIFT_STEPS, step + _DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(candidate * totp.interval), code.strip()):
            # Single use: only a step after the last one used, claimed in one UPDATE.
            return bool(
                await Authenticator.filter(pk=row.pk, last_step__lt=candidate).update(
                    last_step=candidate
                )
            )
    return False


def _step(at: datetime, interval: int) -> int:
    return int(at.timestamp()) // interval


async def _use_recovery_code(row: Authenticator, code: str) -> bool:
    normalized = code.strip().lower().replace("-", "").replace(" ", "")
    if len(normalized) != 16:
        return False
    used = await RecoveryCode.filter(
        authenticator_id=row.pk, code_hash=_recovery_hash(normalized), used_at=None
    ).update(used_at=now())
    return bool(used)


def _recovery_code() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(16))
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def _recovery_hash(code: str) -> str:
    return hash_token(code.lower().replace("-", ""))


async def remove_all(person: Person) -> bool:
    """Removes the person's authenticator and any set-up under way (an admin's reset);
    whether a confirmed one was there."""
    had = await confirmed(person) is not None
    await Authenticator.filter(**_owner(person)).delete()
    return had


def wrong() -> Exception:
    return _wrong()


def _wrong() -> Exception:
    return input_error(ErrorCode.SECOND_FACTOR_INVALID, "The code is wrong or was used.", "code")
