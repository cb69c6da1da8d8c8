"""When an authenticator is required: sessions that may only set one up, the rules for
replacing and removing one, and an owner's or admin's reset of someone else's.

A person whose requirement (services/firm/second_factor.requirement) is AUTHENTICATOR and who
has none confirmed gets in with a mailed code or a mailed link, but their session may only
enroll: `must_enroll` is asked of the session on every operation (schema/extensions.py),
so the session becomes a full one the moment its authenticator is confirmed, and a session
that predates the start date is held to it too. Nothing is stored on the session.
"""

from __future__ import annotations

from tortoise.transactions import in_transaction

from models import Firm, PortalUser, SecondFactorRequirement, Session, StaffMember, StaffRole
from portico.settings import Settings
from services.firm import authenticators, firms, second_factor
from services.outbound import outbox
from services.shared import audit
from services.shared.errors import AuthenticatorRequired, ErrorCode, Forbidden, input_error
from services.shared.scope import FirmScope
from services.shared.sessions import now

Person = StaffMember | PortalUser

# What an enrollment-only session may run at the root of an operation (GraphQL names):
# enrolling, and what anyone may run without a session (a browser sends its session cookie
# along when someone else signs in on it, or accepts an invitation).
ENROLLMENT_FIELDS = frozenset(
    {
        "__typename",
        "viewer",
        "firm",
        "startAuthenticatorEnrollment",
        "confirmAuthenticatorEnrollment",
        "signOut",
        "signIn",
        "staffSignIn",
        "verifySecondFactor",
        "acceptInvitation",
        "setStaffPassword",
        "setNotificationPreferences",
    }
)
REQUIRED = (
    "Your firm requires an authenticator app: set one up first "
    "(startAuthenticatorEnrollment, then confirmAuthenticatorEnrollment)."
)


def requires_authenticator(firm: Firm, person: Person) -> bool:
    """Whether the stricter requirement for `person` is AUTHENTICATOR now (no query)."""
    level = second_factor.requirement(firm, person, now())
    return level is SecondFactorRequirement.AUTHENTICATOR


async def must_enroll(firm: Firm, person: Person) -> bool:
    """An authenticator is required and none is confirmed: the person may only enroll. Asks
    the database only when one is required (the firm and person come with the session)."""
    if not requires_authenticator(firm, person):
        return False
    return await authenticators.confirmed(person) is None


async def session_must_enroll(session: Session) -> bool:
    """`must_enroll` for a live session (resolve_session loads its firm and viewer)."""
    person = session.staff_member or session.portal_user
    assert person is not None
    return await must_enroll(session.firm, person)


async def require_full_session(session: Session) -> None:
    """For what a session does after its operation started (a subscription's events): the
    requirement may have taken hold since, which ends the stream."""
    if await session_must_enroll(session):
        raise AuthenticatorRequired(REQUIRED)


OPERATOR = "Portico's operator"  # who ran `portico reset-authenticator`
# What happened to an authenticator, as the notice says it ("... was {change}").
SET_UP, REPLACED, REMOVED, RESET = "set up", "replaced", "removed", "reset"


async def tell(person: Person, change: str, settings: Settings, by: str | None = None) -> None:
    """Emails the person that their authenticator changed (`by`: who did it, when not
    themselves), so a change they did not make (a stolen session's, an admin's) is seen."""
    firm = await Firm.get(pk=person.firm_id)
    await outbox.enqueue(
        firm_id=firm.pk,
        firm_name=firm.name,
        to=person.email,
        template="authenticator_changed",
        context={"firm_name": firm.name, "change": change, "by": by, "at": now()},
        kind="AUTHENTICATOR_CHANGED",
        settings=settings,
    )


async def confirm(person: Person, code: str, settings: Settings) -> list[str]:
    """confirmAuthenticatorEnrollment: turns the new app on (in place of any other), and
    tells the person."""
    replacing = await authenticators.confirmed(person) is not None
    codes = await authenticators.confirm_enrollment(person, code, settings)
    await tell(person, REPLACED if replacing else SET_UP, settings)
    return codes


async def start(person: Person, code: str | None, settings: Settings) -> tuple[str, str]:
    """A new secret to scan. Someone with an authenticator replaces it, which needs a fresh
    code from it or an unused recovery code (as removal does): a stolen session cannot put
    its own app in their place. The old one keeps working until the new one is confirmed."""
    current = await authenticators.confirmed(person)
    if current is not None:
        if not code:
            raise input_error(
                ErrorCode.AUTHENTICATOR_ENROLLED,
                "An authenticator is set up already: give a code from it (or a recovery "
                "code) to replace it.",
                "code",
            )
        if not await authenticators.check(settings, current, code):
            raise authenticators.wrong()
    return await authenticators.start_enrollment(person, settings)


async def remove(person: Person, code: str, settings: Settings) -> None:
    """removeAuthenticator: refused while the person must have one (they may replace it)."""
    firm = await Firm.get(pk=person.firm_id)
    if requires_authenticator(firm, person) and await authenticators.confirmed(person):
        raise input_error(
            ErrorCode.AUTHENTICATOR_REQUIRED,
            "Your firm requires an authenticator: replace it (startAuthenticatorEnrollment "
            "with a code) instead of removing it.",
            "code",
        )
    await authenticators.remove(person, code, settings)
    await tell(person, REMOVED, settings)


async def reset(
    actor: StaffMember, scope: FirmScope, person_id: tuple[str, int], settings: Settings
) -> int:
    """resetAuthenticator: an owner or admin removes a colleague's or a client's
    authenticator (a lost phone and lost recovery codes). Another firm's person is not found;
    an admin may not reset an owner (only another owner may); nobody resets their own
    (removeAuthenticator or a replacement needs a fresh code, which a stolen session lacks)."""
    kind, pk = person_id
    person: Person | None
    if kind == "StaffMember":
        person = await StaffMember.get_or_none(pk=pk, firm_id=scope.firm_id)
    else:
        person = await PortalUser.get_or_none(pk=pk, firm_id=scope.firm_id)
    if person is None:
        raise input_error(ErrorCode.NOT_FOUND, "No such person in this firm.", "personId")
    if isinstance(person, StaffMember):
        if person.pk == actor.pk:
            raise Forbidden("Change your own authenticator with a code from it.")
        if person.role == StaffRole.OWNER and actor.role != StaffRole.OWNER:
            raise Forbidden("Only an owner may reset an owner's authenticator.")
    return await reset_person(person, actor, settings)


async def reset_by_address(
    firm_slug: str, email: str, client: bool, settings: Settings
) -> tuple[Person, int]:
    """`portico reset-authenticator`: the operator's reset of a staff member's (or with
    `client`, a portal user's) authenticator, found by firm slug and address."""
    candidates = PortalUser.all() if client else StaffMember.all()
    person = await firms.find_person(candidates, firm_slug.strip().lower(), email.strip().lower())
    if person is None:
        who = "portal user" if client else "staff member"
        raise input_error(ErrorCode.NOT_FOUND, f"No such {who} in firm '{firm_slug}'.", "email")
    return person, await reset_person(person, None, settings)


async def reset_person(person: Person, actor: StaffMember | None, settings: Settings) -> int:
    """Removes `person`'s authenticator (and any set-up under way) and ends all their
    sessions; the answer is how many ended. Audited as AUTHENTICATOR_RESET (`actor` None:
    the operator's `portico reset-authenticator`). Their next sign-in goes as for anyone
    without one: a mailed code, and an enrollment-only session where one is required."""
    async with in_transaction():
        removed = await authenticators.remove_all(person)
        owner = second_factor.owner(person)
        ended = await Session.filter(**owner, revoked_at=None).update(revoked_at=now())
        await audit.record(
            FirmScope(person.firm_id),
            "AUTHENTICATOR_RESET",
            account_id=None,
            email=person.email,
            staff=actor,
            before={"authenticator": removed},
            after={"authenticator": False, "sessionsEnded": ended},
        )
        await tell(person, RESET, settings, by=actor.name if actor else OPERATOR)
    return ended
