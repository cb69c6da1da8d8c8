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
from schema.payloads import AuthenticatorEnrollmentPayload, RecoveryCodesPayload
from services.firm import authenticators, signin
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
        "code. Replaces a set-up not yet confirmed."
    )
    async def start_authenticator_enrollment(self, info: Info) -> AuthenticatorEnrollmentPayload:
        context: Context = info.context
        result, errors = await attempt(
            context, authenticators.start_enrollment(_viewer(context), context.settings)
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
                lambda: authenticators.confirm_enrollment(viewer, code, context.settings),
            ),
        )
        return RecoveryCodesPayload(errors=errors, recovery_codes=codes or [])

    @mutation(
        description="Removes the authenticator, given a fresh code from it or an unused "
        "recovery code; the recovery codes die with it."
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
                lambda: authenticators.remove(viewer, code, context.settings),
            ),
        )
        return RecoveryCodesPayload(errors=errors)
