"""A signed-in person's authenticator app: set it up (QR code, then a first code, then
recovery codes shown once) and remove it with a fresh code."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from models import PortalUser, StaffMember
from resolvers.attempt import attempt
from resolvers.context import Context
from resolvers.mutations.selection import mutation
from resolvers.mutations.sessions import policy
from schema import ids
from schema.payloads import (
    AuthenticatorEnrollmentPayload,
    RecoveryCodesPayload,
    ResetAuthenticatorPayload,
)
from schema.permissions import IsOwnerOrAdmin
from services.firm import enrollment, signin
from services.shared.errors import Unauthenticated


def _viewer(context: Context) -> StaffMember | PortalUser:
    viewer = context.staff or context.portal_user
    if viewer is None:
        raise Unauthenticated()
    return viewer


@strawberry.type
class AuthenticatorMutations:
    @mutation(
        description="Starts setting up an authenticator app for the signed-in person: scan "
        "the QR code (or enter the URI), then confirmAuthenticatorEnrollment with its first "
        "code. Replaces a set-up not yet confirmed. Someone who has an authenticator replaces "
        "it this way, with a fresh code from it or a recovery code (AUTHENTICATOR_ENROLLED "
        "without one); the old one works until the new one is confirmed."
    )
    async def start_authenticator_enrollment(
        self,
        info: Info,
        code: Annotated[
            str | None,
            strawberry.argument(
                description="To replace an authenticator: a code from it, or a recovery code."
            ),
        ] = None,
    ) -> AuthenticatorEnrollmentPayload:
        context: Context = info.context
        viewer = _viewer(context)
        result, errors = await attempt(
            context,
            signin.code_checked(
                viewer,
                policy(context),
                lambda: enrollment.start(viewer, code, context.settings),
            ),
        )
        if result is None:
            return AuthenticatorEnrollmentPayload(errors=errors)
        uri, svg = result
        return AuthenticatorEnrollmentPayload(errors=[], provisioning_uri=uri, qr_code_svg=svg)

    @mutation(
        description="Turns the authenticator on with its first code; answers ten recovery "
        "codes, shown this once. From now on every sign-in asks for a code from the app."
    )
    async def confirm_authenticator_enrollment(
        self,
        info: Info,
        code: Annotated[str, strawberry.argument(description="The code the app shows now.")],
    ) -> RecoveryCodesPayload:
        context: Context = info.context
        viewer = _viewer(context)
        codes, errors = await attempt(
            context,
            signin.code_checked(
                viewer,
                policy(context),
                lambda: enrollment.confirm(viewer, code, context.settings),
            ),
        )
        return RecoveryCodesPayload(errors=errors, recovery_codes=codes or [])

    @mutation(
        description="Removes the authenticator, given a fresh code from it or an unused "
        "recovery code; the recovery codes die with it. Refused (AUTHENTICATOR_REQUIRED) "
        "while the firm requires one of this person: replace it instead."
    )
    async def remove_authenticator(
        self,
        info: Info,
        code: Annotated[
            str, strawberry.argument(description="A code from the app, or a recovery code.")
        ],
    ) -> RecoveryCodesPayload:
        context: Context = info.context
        viewer = _viewer(context)
        _, errors = await attempt(
            context,
            signin.code_checked(
                viewer,
                policy(context),
                lambda: enrollment.remove(viewer, code, context.settings),
            ),
        )
        return RecoveryCodesPayload(errors=errors)

    @mutation(
        description="An owner or admin removes a staff member's or a client's authenticator "
        "(a lost phone and lost recovery codes) and ends all their sessions; audited as "
        "AUTHENTICATOR_RESET. Their next sign-in asks for a mailed code, then for a new "
        "set-up where one is required. Only an owner resets an owner; nobody their own.",
        permission_classes=[IsOwnerOrAdmin],
    )
    async def reset_authenticator(
        self,
        info: Info,
        person_id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The id of a StaffMember or a PortalUser."),
        ],
    ) -> ResetAuthenticatorPayload:
        context: Context = info.context
        ended, errors = await attempt(
            context,
            enrollment.reset(
                context.require_staff(), context.scope, _person(person_id), context.settings
            ),
        )
        return ResetAuthenticatorPayload(errors=errors, sessions_ended=ended or 0)


def _person(person_id: strawberry.ID) -> tuple[str, int]:
    """A StaffMember's or PortalUser's id (anything else names nobody: pk 0)."""
    parsed = ids.parse(str(person_id))
    if parsed is None or parsed[0] not in ("StaffMember", "PortalUser"):
        return ("StaffMember", 0)
    return parsed
