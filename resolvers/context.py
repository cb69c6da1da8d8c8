"""The per-request context: who is asking, their firm scope, and fresh DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from models import PortalUser, Session, StaffMember
from portico.settings import Settings
from resolvers.loaders import Loaders
from services.portal import access
from services.shared.errors import Forbidden, Unauthenticated
from services.shared.pubsub import EventBus
from services.shared.scope import FirmScope
from services.shared.sessions import resolve_session, resolve_session_shared

SESSION_COOKIE = "portico_session"


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    settings: Settings
    session: Session | None = None
    token: str | None = field(default=None, repr=False)

    connection_params: dict | None = field(default=None, repr=False)  # WebSocket init payload
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
        token = (self.connection_params or {}).get("token")
        return token if isinstance(token, str) and token else self.token

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


def token_from_request(request: Request | WebSocket) -> str | None:
    """`Authorization: Bearer` first (mobile, scripts), then the browser's session cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(SESSION_COOKIE)
