"""staffSignIn and signOut."""

from __future__ import annotations

from datetime import timedelta

import strawberry
from starlette.responses import Response
from strawberry.types import Info

from resolvers.attempt import attempt
from resolvers.context import SESSION_COOKIE, Context
from schema.payloads import SignInPayload
from schema.types import StaffMember
from services import sessions, signin


def _policy(context: Context) -> signin.SignInPolicy:
    settings = context.settings
    return signin.SignInPolicy(
        session_ttl=timedelta(hours=settings.session_ttl_hours),
        max_failures=settings.signin_max_failures,
        lockout_seconds=settings.signin_lockout_seconds,
    )


def _set_cookie(context: Context, token: str) -> None:
    if isinstance(context.response, Response):
        context.response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=context.settings.session_ttl_hours * 3600,
            httponly=True,
            samesite="lax",
            secure=context.settings.production,
            path="/",
        )


@strawberry.type
class SessionMutations:
    @strawberry.mutation(
        description="Staff sign-in. Returns a token for Bearer use and sets the session cookie."
    )
    async def staff_sign_in(
        self, info: Info, firm: str, email: str, password: str
    ) -> SignInPayload:
        context: Context = info.context
        signed_in, errors = await attempt(
            signin.staff_sign_in(firm, email, password, _policy(context))
        )
        if signed_in is None:
            return SignInPayload(errors=errors)
        _set_cookie(context, signed_in.token)
        return SignInPayload(
            errors=[], token=signed_in.token, viewer=StaffMember.from_model(signed_in.staff)
        )

    @strawberry.mutation(description="Ends this session (token and cookie alike).")
    async def sign_out(self, info: Info) -> bool:
        context: Context = info.context
        if isinstance(context.response, Response):
            context.response.delete_cookie(SESSION_COOKIE, path="/")
        if context.session is None:
            return False
        await sessions.revoke(context.session)
        return True
