"""Signing in and out: staffSignIn, signIn (clients), acceptInvitation, signOut, and the
client's account switching."""

from __future__ import annotations

from typing import Annotated

import strawberry
from starlette.responses import Response
from strawberry.types import Info

from models import Account as AccountModel
from models import PortalUser as PortalUserModel
from models import StaffMember as StaffMemberModel
from resolvers.attempt import attempt
from resolvers.context import (
    DEVICE_COOKIE,
    SESSION_COOKIE,
    Context,
    set_device_cookie,
    set_session_cookie,
)
from resolvers.mutations.selection import mutation
from schema import ids
from schema.enums import SecondFactorMethod
from schema.payloads import SecondFactorChallenge, SignInPayload, SwitchAccountPayload
from schema.types import Account, PortalUser, StaffMember
from services.firm import signin
from services.firm.second_factor import Challenge, Origin
from services.portal import access, client_session
from services.shared import sessions


def policy(context: Context) -> signin.SignInPolicy:
    return signin.SignInPolicy.from_settings(context.settings)


def origin(context: Context, device_token: str | None = None) -> Origin:
    """Where the request comes from: address, browser and device (the token a cookieless
    client sends back, else the cookie; HTTP or WebSocket)."""
    client = context.request.client
    return Origin(
        client.host if client else None,
        context.request.headers.get("user-agent", ""),
        device_token or context.request.cookies.get(DEVICE_COOKIE),
    )


def credentials(
    context: Context, firm: str, email: str, password: str, device_token: str | None
) -> signin.Credentials:
    """What the client typed, and where from."""
    where = origin(context, device_token)
    return signin.Credentials(firm, email, password, where.address, where.user_agent, where.device)


DeviceToken = Annotated[
    str | None,
    strawberry.argument(
        description="The deviceToken an earlier sign-in of this client answered (clients "
        "that keep no cookies): a device Portico knows is not reported as new."
    ),
]


def _cookie(context: Context, signed_in: signin.SignedIn) -> None:
    if isinstance(context.response, Response):
        set_session_cookie(context.response, signed_in.token, context.settings)
        if signed_in.device:
            set_device_cookie(context.response, signed_in.device, context.settings)


def _challenge(challenge: Challenge) -> SignInPayload:
    return SignInPayload(
        errors=[],
        second_factor=SecondFactorChallenge(
            id=strawberry.ID(challenge.id),
            methods=[SecondFactorMethod(m) for m in challenge.methods],
            expires_at=challenge.expires_at,
        ),
    )


def _staff_payload(
    context: Context, result: tuple[signin.Outcome, StaffMemberModel] | None, errors: list
) -> SignInPayload:
    if result is None:
        return SignInPayload(errors=errors)
    signed_in, staff = result
    if isinstance(signed_in, Challenge):
        return _challenge(signed_in)
    _cookie(context, signed_in)
    return SignInPayload(
        errors=[],
        token=signed_in.token,
        viewer=StaffMember.from_model(staff),
        authenticator_required=signed_in.must_enroll,
        device_token=signed_in.device,
    )


async def _client_payload(
    context: Context, result: tuple[signin.Outcome, PortalUserModel] | None, errors: list
) -> SignInPayload:
    if result is None:
        return SignInPayload(errors=errors)
    signed_in, user = result
    if isinstance(signed_in, Challenge):
        return _challenge(signed_in)
    _cookie(context, signed_in)
    rows = await client_session.accounts_in_order(await access.client_account_ids(user.pk))
    current = signed_in.session.current_account_id
    return SignInPayload(
        errors=[],
        token=signed_in.token,
        viewer=PortalUser.from_model(user),
        accounts=[Account.from_model(row) for row in rows],
        current_account=next((Account.from_model(row) for row in rows if row.pk == current), None),
        authenticator_required=signed_in.must_enroll,
        device_token=signed_in.device,
    )


@strawberry.type
class SessionMutations:
    @mutation(
        description="Staff sign-in. Returns a token for Bearer use and sets the session cookie."
    )
    async def staff_sign_in(
        self,
        info: Info,
        firm: Annotated[
            str, strawberry.argument(description="The firm's slug, as the firm gave it.")
        ],
        email: Annotated[
            str, strawberry.argument(description="The staff member's sign-in address.")
        ],
        password: Annotated[str, strawberry.argument(description="Their password.")],
        device_token: DeviceToken = None,
    ) -> SignInPayload:
        result, errors = await attempt(
            info.context,
            signin.staff_sign_in(
                credentials(info.context, firm, email, password, device_token),
                policy(info.context),
            ),
        )
        return _staff_payload(info.context, result, errors)

    @mutation(
        description="A new staff member sets their first password from the mailed link, "
        "and is signed in."
    )
    async def set_staff_password(
        self,
        info: Info,
        token: Annotated[str, strawberry.argument(description="The token from the mailed link.")],
        password: Annotated[str, strawberry.argument(description="The new password.")],
    ) -> SignInPayload:
        result, errors = await attempt(
            info.context,
            signin.set_first_password(token, password, policy(info.context), origin(info.context)),
        )
        return _staff_payload(info.context, result, errors)

    @mutation(
        description="Client sign-in. With one account the client lands in it; with several, "
        "currentAccount stays null until they choose (switchAccount)."
    )
    async def sign_in(
        self,
        info: Info,
        firm: Annotated[
            str, strawberry.argument(description="The firm's slug, as the firm gave it.")
        ],
        email: Annotated[str, strawberry.argument(description="The client's sign-in address.")],
        password: Annotated[str, strawberry.argument(description="Their password.")],
        device_token: DeviceToken = None,
    ) -> SignInPayload:
        result, errors = await attempt(
            info.context,
            signin.client_sign_in(
                credentials(info.context, firm, email, password, device_token),
                policy(info.context),
            ),
        )
        return await _client_payload(info.context, result, errors)

    @mutation(
        description="Activates an invitation and signs the client in. A new portal user "
        "sets a password; someone who already has one in this firm needs none."
    )
    async def accept_invitation(
        self,
        info: Info,
        token: Annotated[
            str, strawberry.argument(description="The token from the invitation link.")
        ],
        password: Annotated[
            str | None,
            strawberry.argument(
                description="The password to set; may be left out by someone who already "
                "has a portal sign-in in this firm."
            ),
        ] = None,
    ) -> SignInPayload:
        result, errors = await attempt(
            info.context,
            signin.accept_invitation(token, password, policy(info.context), origin(info.context)),
        )
        return await _client_payload(info.context, result, errors)

    @mutation(
        description="Completes a sign-in that answered secondFactor: the challenge's id and "
        "the code (mailed, from the authenticator app, or a recovery code). A wrong or "
        "expired code answers SECOND_FACTOR_INVALID; once its 5 tries are used, "
        "TOO_MANY_ATTEMPTS."
    )
    async def verify_second_factor(
        self,
        info: Info,
        challenge_id: Annotated[
            strawberry.ID, strawberry.argument(description="The challenge's id.")
        ],
        code: Annotated[str, strawberry.argument(description="The code.")],
        device_token: DeviceToken = None,
    ) -> SignInPayload:
        result, errors = await attempt(
            info.context,
            signin.verify_second_factor(
                str(challenge_id), code, origin(info.context, device_token), policy(info.context)
            ),
        )
        if result is not None and isinstance(result[1], StaffMemberModel):
            return _staff_payload(info.context, (result[0], result[1]), errors)
        return await _client_payload(info.context, result, errors)  # type: ignore[arg-type]

    @mutation(description="A client enters another of their accounts.")
    async def switch_account(
        self,
        info: Info,
        account_id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The id of an account the client may enter."),
        ],
    ) -> SwitchAccountPayload:
        context: Context = info.context
        context.require_client()
        assert context.session is not None
        chosen, errors = await attempt(
            info.context,
            client_session.switch_account(context.session, ids.decode(account_id, "Account")),
        )
        if chosen is None:
            return SwitchAccountPayload(errors=errors)
        row = await AccountModel.get(pk=chosen)
        return SwitchAccountPayload(errors=[], current_account=Account.from_model(row))

    @mutation(description="Hides the notice naming the current account until the next sign-in.")
    async def dismiss_account_notice(self, info: Info) -> bool:
        context: Context = info.context
        context.require_client()
        assert context.session is not None
        await client_session.dismiss_notice(context.session)
        return True

    @mutation(description="Ends this session (token and cookie alike).")
    async def sign_out(self, info: Info) -> bool:
        context: Context = info.context
        if isinstance(context.response, Response):
            context.response.delete_cookie(SESSION_COOKIE, path="/")
        if context.session is None:
            return False
        await sessions.revoke(context.session)
        return True
