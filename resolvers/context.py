"""The per-request context: who is asking, their firm scope, and fresh DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from models import PortalUser, Session, StaffMember
from portico.settings import Settings
from resolvers.loaders import Loaders
from services.mail import threads
from services.portal import access
from services.shared.errors import Forbidden, Unauthenticated
from services.shared.pubsub import EventBus
from services.shared.scope import FirmScope
from services.shared.sessions import resolve_session, resolve_session_shared

SESSION_COOKIE = "portico_session"
DEVICE_COOKIE = "portico_device"  # names a browser Portico has seen sign in (new-device notice)


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    settings: Settings
    session: Session | None = None
    token: str | None = field(default=None, repr=False)

    connection_params: dict | None = field(default=None, repr=False)  # WebSocket init payload
    # Set: synced mail is read through these eyes, not the session's (a fan-out group's shared
    # run reads as nobody in particular, nested lists included: resolvers/fanout).
    reader: threads.Reader | None = field(default=None, repr=False)
    _client_accounts: list[int] | None = field(default=None, repr=False)

    @property
    def staff(self) -> StaffMember | None:
        return self.session.staff_member if self.session else None

    @property
    def portal_user(self) -> PortalUser | None:
        return self.session.portal_user if self.session else None

    def require_staff(self) -> StaffMember:
        if self.staff is None:
            raise Forbidden("Staff only.") if self.portal_user else Unauthenticated()
        return self.staff

    def require_client(self) -> PortalUser:
        if self.portal_user is None:
            raise Forbidden("Clients only.") if self.staff else Unauthenticated()
        return self.portal_user

    async def client_account_ids(self) -> list[int]:
        """The accounts this client may enter, checked once per request (never cached in
        the token: LOGIN off takes effect on the next request)."""
        if self._client_accounts is None:
            self._client_accounts = await access.client_account_ids(self.require_client().pk)
        return self._client_accounts

    async def current_account_id(self) -> int | None:
        """The client's current account, if they may still enter it."""
        current = self.session.current_account_id if self.session else None
        return current if current in await self.client_account_ids() else None

    @property
    def mail_reader(self) -> threads.Reader:
        """Whose eyes synced mail is read through (services/mail/threads: private threads);
        the firm came with the session, so no query."""
        if self.reader is not None:
            return self.reader
        staff = self.require_staff()
        assert self.session is not None  # a staff member comes with a session
        return threads.reader(staff, self.session.firm)

    @property
    def bus(self) -> EventBus | None:
        """The process's event bus (set by the app's lifespan; None outside of it)."""
        return getattr(self.request.app.state, "bus", None)

    @property
    def scope(self) -> FirmScope:
        """The staff viewer's firm; the only way staff resolvers reach tenant data."""
        return FirmScope(self.require_staff().firm_id)

    @property
    def viewer_scope(self) -> FirmScope:
        """The signed-in viewer's firm, staff or client. Client-facing fields only: what a
        client may see within it is decided by the field (staff-only ones carry IsStaff)."""
        viewer = self.staff or self.portal_user
        if viewer is None:
            raise Unauthenticated()
        return FirmScope(viewer.firm_id)

    @cached_property
    def loaders(self) -> Loaders:
        return Loaders(self.viewer_scope)

    def reset_loaders(self) -> None:
        """Forget what the loaders cached (after a write)."""
        self.__dict__.pop("loaders", None)

    def renew(self, session: Session | None) -> None:
        """A fresh start for the next operation of a long-lived (WebSocket) context."""
        self.session = session
        self._client_accounts = None
        self.reset_loaders()

    @property
    def socket_token(self) -> str | None:
        """A WebSocket's credentials: the token of `connection_init`'s payload, else the
        handshake's (Authorization header or session cookie)."""
        return params_token(self.connection_params) or self.token

    async def open_socket(self, params: dict[str, Any]) -> bool:
        """`connection_init`: keep its params and check the credentials the client gave
        (params, else the handshake's Authorization header). False: they name no live
        session. None given is anonymous, as is a stale cookie (script cannot clear an
        HttpOnly cookie, so refusing it would lock a browser out; HTTP ignores it too)."""
        self.connection_params = params
        in_params = bool(_param_values(params))
        token = params_token(params) if in_params else bearer_token(self.request)
        if not in_params and token is None:
            return True
        self.renew(await resolve_session(token))
        return self.session is not None

    async def recheck_session(self, shared: bool = False) -> None:
        """Look the session up again (one query): a WebSocket does so for every operation and
        every subscription event, so signing out or losing a right applies at once. `shared`:
        the lookups of subscribers woken by one event go out as one query."""
        lookup = resolve_session_shared if shared else resolve_session
        self.renew(await lookup(self.socket_token))


def set_session_cookie(response: Response, token: str, settings: Settings) -> None:
    """The browser's session: HttpOnly (no script reads it), SameSite=Lax, Secure in
    production."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_ttl_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=settings.production,
        path="/",
    )


def set_device_cookie(response: Response, token: str, settings: Settings) -> None:
    """Names this browser to Portico (a sign-in from another one is notified); HttpOnly."""
    response.set_cookie(
        DEVICE_COOKIE,
        token,
        max_age=400 * 24 * 3600,
        httponly=True,
        samesite="lax",
        secure=settings.production,
        path="/",
    )


def token_from_request(request: HTTPConnection) -> str | None:
    """`Authorization: Bearer` first (mobile, scripts), then the browser's session cookie."""
    return bearer_token(request) or request.cookies.get(SESSION_COOKIE)


def bearer_token(request: HTTPConnection) -> str | None:
    """The token of an `Authorization: Bearer` header, if any."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


# connection_init's keys for a token, as stock clients spell them (matched in any case):
# `token`, an `Authorization` header copied as is (`Bearer ` optional), Apollo's `authToken`.
_PARAM_KEYS = ("token", "authorization", "authtoken")


def _param_values(params: dict[str, Any] | None) -> list[object]:
    """The values of the token keys present with a value (null and "" mean none)."""
    by_key = {str(key).lower(): value for key, value in (params or {}).items()}
    return [by_key[key] for key in _PARAM_KEYS if by_key.get(key) not in (None, "")]


def params_token(params: dict[str, Any] | None) -> str | None:
    """The token a `connection_init` payload gives: the first key present, if a string."""
    values = _param_values(params)
    value = values[0] if values else None
    if not isinstance(value, str):
        return None
    scheme, _, credentials = value.strip().partition(" ")
    bearer = scheme.lower() == "bearer" and credentials.strip()
    return credentials.strip() if bearer else value.strip()
