"""The per-request context: who is asking, their firm scope, and fresh DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from models import Session, StaffMember
from portico.settings import Settings
from resolvers.loaders import Loaders
from services.errors import Unauthenticated
from services.scope import FirmScope

SESSION_COOKIE = "portico_session"


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    settings: Settings
    session: Session | None = None
    token: str | None = field(default=None, repr=False)

    @property
    def staff(self) -> StaffMember | None:
        return self.session.staff_member if self.session else None

    def require_staff(self) -> StaffMember:
        if self.staff is None:
            raise Unauthenticated()
        return self.staff

    @property
    def scope(self) -> FirmScope:
        """The viewer's firm; the only way resolvers reach tenant data."""
        return FirmScope(self.require_staff().firm_id)

    @cached_property
    def loaders(self) -> Loaders:
        return Loaders(self.scope)


def token_from_request(request: Request | WebSocket) -> str | None:
    """`Authorization: Bearer` first (mobile, scripts), then the browser's session cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(SESSION_COOKIE)
