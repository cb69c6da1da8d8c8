"""Sign-in for staff and clients: one answer for a wrong firm, email or password, a
throttle per (kind, firm, email), known or not, and a budget per client address."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models import Firm, PortalUser, Session, SignInThrottle, StaffMember
from portico.settings import Settings
from services.firm import (
    address_throttle,
    devices,
    enrollment,
    firms,
    password_links,
    second_factor,
    throttle_rows,
)
from services.firm.second_factor import Challenge, Origin
from services.portal import access, invitations
from services.shared import passwords, sessions, throttle_keys
from services.shared.errors import ErrorCode, InputError, input_error
from services.webhooks import emit

INVALID_CREDENTIALS = "Firm, email or password is wrong."

U = TypeVar("U", StaffMember, PortalUser)
T = TypeVar("T")


@dataclass(frozen=True)
class SignInPolicy:
    session_ttl: timedelta
    max_failures: int
    lockout_seconds: int
    per_address: address_throttle.AddressBudget
    settings: Settings = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> SignInPolicy:
        return cls(
            session_ttl=timedelta(hours=settings.session_ttl_hours),
            max_failures=settings.signin_max_failures,
            lockout_seconds=settings.signin_lockout_seconds,
            per_address=address_throttle.AddressBudget(
                max_failures=settings.signin_max_failures_per_address,
                window=timedelta(seconds=settings.signin_lockout_seconds),
            ),
            settings=settings,
        )


@dataclass(frozen=True)
class SignedIn:
    token: str
    session: Session
    device: str | None = None  # a new device cookie to set (None: the device is known)
    must_enroll: bool = False  # the session may only set up an authenticator (enrollment)


@dataclass(frozen=True)
class Credentials:
    firm_slug: str
    email: str
    password: str = field(repr=False)
    address: str | None = None  # the client's network address; None when unknown
    user_agent: str = ""
    device: str | None = field(default=None, repr=False)  # the device cookie, if any

    @property
    def origin(self) -> Origin:
        return Origin(self.address, self.user_agent, self.device)


# A sign-in either starts a session or asks for a second factor first.
Outcome = SignedIn | Challenge


async def staff_sign_in(
    credentials: Credentials, policy: SignInPolicy
) -> tuple[Outcome, StaffMember]:
    members = StaffMember.filter(active=True)
    staff, key = await _authenticate("staff", members, credentials, policy)
    return await _finish(staff, key, None, credentials.origin, policy), staff


async def client_sign_in(
    credentials: Credentials, policy: SignInPolicy
) -> tuple[Outcome, PortalUser]:
    """A client lands in their account when they have exactly one; otherwise they choose."""
    user, key = await _authenticate("client", PortalUser.all(), credentials, policy)
    return await _finish(user, key, await _landing(user), credentials.origin, policy), user


async def _landing(user: PortalUser) -> int | None:
    account_ids = await access.client_account_ids(user.pk)
    return account_ids[0] if len(account_ids) == 1 else None


async def _finish(
    person: StaffMember | PortalUser,
    key: str,
    current_account_id: int | None,
    origin: Origin,
    policy: SignInPolicy,
) -> Outcome:
    """The session, or (when this person needs one) a second-factor challenge. The throttle
    row is cleared only once the sign-in is complete: wrong codes count on it too."""
    methods = await second_factor.methods_for(person)
    if methods:
        async with in_transaction():  # the code's mail commits with its challenge
            return await second_factor.open_challenge(
                person, methods, key, current_account_id, policy.settings
            )
    await SignInThrottle.filter(key=key).delete()
    return await _start(person, current_account_id, origin, policy)


async def _start(
    person: StaffMember | PortalUser,
    current_account_id: int | None,
    origin: Origin,
    policy: SignInPolicy,
) -> SignedIn:
    """The session, and the device noted (a new one's owner is told, services/firm/devices);
    a client's sign-in is announced to the firm's webhooks (client.signed_in) with it. Where
    an authenticator is required and none is set up, the session may only enroll one."""
    must_enroll = await enrollment.must_enroll(await Firm.get(pk=person.firm_id), person)
    if isinstance(person, StaffMember):
        token, session = await sessions.start_staff_session(person, policy.session_ttl)
        device = await devices.recognise(person, origin, policy.settings)
        return SignedIn(token, session, device, must_enroll)
    async with in_transaction():
        token, session = await sessions.start_client_session(
            person, policy.session_ttl, current_account_id
        )
        await emit.client_signed_in(person, await access.client_account_ids(person.pk))
        device = await devices.recognise(person, origin, policy.settings)
    return SignedIn(token, session, device, must_enroll)


async def verify_second_factor(
    challenge_id: str, code: str, origin: Origin, policy: SignInPolicy
) -> tuple[SignedIn, StaffMember | PortalUser]:
    """Completes a sign-in with the answer to its challenge."""

    async def wrong(key: str) -> None:
        await _wrong_code(key, policy)

    row = await second_factor.redeem(challenge_id, code, wrong, policy.settings)
    person = await second_factor.person_of(row)
    if isinstance(person, StaffMember) and not person.active:
        raise second_factor.invalid()
    await SignInThrottle.filter(key=row.throttle_key).delete()
    current = row.current_account_id
    if isinstance(person, PortalUser) and current not in await access.client_account_ids(person.pk):
        current = await _landing(person)  # access changed meanwhile
    return await _start(person, current, origin, policy), person


async def code_checked(
    person: StaffMember | PortalUser,
    policy: SignInPolicy,
    action: Callable[[], Awaitable[T]],
) -> T:
    """Runs an authenticator's confirmation or removal, which checks a code of a signed-in
    person: a wrong code counts on their sign-in throttle, and while it is locked no code is
    checked (a stolen session cannot try codes one request after another)."""
    kind = "staff" if isinstance(person, StaffMember) else "client"
    firm = await Firm.get(pk=person.firm_id)
    key = throttle_keys.account_key(kind, firm.slug, person.email_normalized)
    throttle = await SignInThrottle.get_or_none(key=key)
    if throttle and throttle.locked_until and throttle.locked_until > sessions.now():
        raise second_factor.too_many()
    try:
        return await action()
    except InputError as exc:
        if any(e.code == ErrorCode.SECOND_FACTOR_INVALID for e in exc.errors):
            await _wrong_code(key, policy)
        raise


async def _wrong_code(key: str, policy: SignInPolicy) -> None:
    throttle = await _count_attempt(key, timedelta(seconds=policy.lockout_seconds))
    if throttle.failures >= policy.max_failures:
        await _lock(key, _delay(throttle.failures - policy.max_failures, policy))


async def _authenticate(
    kind: str, candidates: QuerySet[U], credentials: Credentials, policy: SignInPolicy
) -> tuple[U, str]:
    address_key = address_throttle.key_for(credentials.address) if credentials.address else None
    if address_key and not await address_throttle.reserve(address_key, policy.per_address):
        raise _too_many()
    slug, email = credentials.firm_slug.strip().lower(), credentials.email.strip().lower()
    key = throttle_keys.account_key(kind, slug, email)
    attempts = await _reserve_attempt(key, policy)
    user = await firms.find_person(candidates, slug, email)
    # verify_password always runs argon2, also when there is no such user.
    password = credentials.password
    if not await passwords.verify_password(user.password_hash if user else None, password):
        if attempts >= policy.max_failures:
            await _lock(key, _delay(attempts - policy.max_failures, policy))
        raise input_error(ErrorCode.INVALID_CREDENTIALS, INVALID_CREDENTIALS)
    assert user is not None and user.password_hash is not None
    if address_key:
        await address_throttle.release(address_key)
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = await passwords.hash_password(password)
        await user.save(update_fields=["password_hash"])
    return user, key


async def _reserve_attempt(key: str, policy: SignInPolicy) -> int:
    """Counts the attempt before the password is checked (the count it returns), so
    parallel guesses cannot slip past the limit: beyond it, each attempt must first win
    the lock for the next window."""
    throttle = await _count_attempt(key, timedelta(seconds=policy.lockout_seconds))
    if throttle.locked_until is not None and throttle.locked_until > sessions.now():
        raise _too_many()
    over = throttle.failures - policy.max_failures
    if over > 0:
        claimed = await SignInThrottle.filter(key=key, locked_until=throttle.locked_until).update(
            locked_until=sessions.now() + _delay(over, policy)
        )
        if not claimed:  # a parallel attempt took this window
            raise _too_many()
    return throttle.failures


def _delay(over: int, policy: SignInPolicy) -> timedelta:
    """30 s at the limit, doubling with each further failure, up to the ceiling."""
    return timedelta(seconds=min(30 * 2**over, policy.lockout_seconds))


async def _lock(key: str, delay: timedelta) -> None:
    await SignInThrottle.filter(key=key).update(locked_until=sessions.now() + delay)


async def _count_attempt(key: str, horizon: timedelta) -> SignInThrottle:
    """Adds one attempt in a single UPDATE (no lost updates under concurrency). A new row
    first prunes stale ones; updated_at (not set by a bulk UPDATE) says the row is in use."""
    for _ in range(2):
        if await SignInThrottle.filter(key=key).update(
            failures=F("failures") + 1, updated_at=sessions.now()
        ):
            return await SignInThrottle.get(key=key)
        await throttle_rows.prune_near(key, horizon)
        try:
            return await SignInThrottle.create(key=key, failures=1)
        except IntegrityError:
            continue  # created by a parallel attempt: count on it
    return await SignInThrottle.get(key=key)


def _too_many() -> InputError:
    return input_error(
        ErrorCode.TOO_MANY_ATTEMPTS, "Too many failed sign-ins. Try again in a few minutes."
    )


async def accept_invitation(
    token: str, password: str | None, policy: SignInPolicy, origin: Origin | None = None
) -> tuple[Outcome, PortalUser]:
    """Activates the invitation and signs the client in, inside the invitation's account.
    The mailed link proves the mailbox as an emailed code would; someone with an
    authenticator is asked for it all the same (the link is weaker than what they chose)."""
    accepted = await invitations.accept(token, password)
    user = accepted.portal_user
    outcome = await _after_link(user, "client", accepted.account_id, origin, policy)
    return outcome, user


async def set_first_password(
    token: str, password: str, policy: SignInPolicy, origin: Origin | None = None
) -> tuple[Outcome, StaffMember]:
    """Redeems a staff password link and signs the member in (as accept_invitation does)."""
    member = await password_links.redeem(token, password)
    return await _after_link(member, "staff", None, origin, policy), member


async def _after_link(
    person: StaffMember | PortalUser,
    kind: str,
    current_account_id: int | None,
    origin: Origin | None,
    policy: SignInPolicy,
) -> Outcome:
    if await second_factor.methods_for(person) == second_factor.AUTHENTICATOR_METHODS:
        firm = await Firm.get(pk=person.firm_id)
        key = throttle_keys.account_key(kind, firm.slug, person.email_normalized)
        async with in_transaction():
            return await second_factor.open_challenge(
                person,
                second_factor.AUTHENTICATOR_METHODS,
                key,
                current_account_id,
                policy.settings,
            )
    return await _start(person, current_account_id, origin or Origin(), policy)
