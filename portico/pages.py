"""Portico's own small pages for mailed links: accepting an invitation (clients) and setting
a first password (staff). They work before any portal front end exists, without JavaScript,
and call the same services as acceptInvitation and setStaffPassword."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from models import Account, PortalUser
from portico.settings import Settings
from resolvers.context import DEVICE_COOKIE, set_device_cookie, set_session_cookie
from services.firm import devices, password_links, signin
from services.firm.second_factor import Origin
from services.portal import invitations
from services.shared.errors import InputError

_templates = Environment(
    loader=PackageLoader("portico", "templates"), autoescape=select_autoescape(["html"])
)
# The token sits in the URL: never send it on as a referrer, never cache, never frame.
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


CROSS_SITE = "This form can only be sent from Portico's own page."


# The link proves the mailbox, as a mailed code would; a person who set up an authenticator
# is asked for its code at sign-in, which happens in the app, not on this page.
AUTHENTICATOR_NEXT = "Done. Your sign-in uses an authenticator app: sign in with it to continue."


END_LINK_INVALID = "This link is not valid or is over a week old."


def _origin(request: Request) -> Origin:
    client = request.client
    return Origin(
        client.host if client else None,
        request.headers.get("user-agent", ""),
        request.cookies.get(DEVICE_COOKIE),
    )


def _sign_in(response: HTMLResponse, signed_in: signin.SignedIn, settings: Settings) -> None:
    set_session_cookie(response, signed_in.token, settings)
    if signed_in.device:
        set_device_cookie(response, signed_in.device, settings)


def _page(status_code: int = 200, **values: Any) -> HTMLResponse:
    values.setdefault("errors", [])
    html = _templates.get_template("link_page.html").render(**values)
    return HTMLResponse(html, status_code=status_code, headers=HEADERS)


def _from_this_site(request: Request) -> bool:
    """A form post from our own page, not another site's (which could sign a victim's
    browser in as someone else): browsers send Origin, or at least Sec-Fetch-Site."""
    origin = request.headers.get("origin")
    # Under our no-referrer policy a browser's form post says "Origin: null".
    if origin not in (None, "null"):
        return origin == f"{request.url.scheme}://{request.url.netloc}"
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")
    return {key: values[0] for key, values in parse_qs(body).items()}


def _password_mismatch(form: dict[str, str]) -> list[str]:
    if form.get("password", "") != form.get("confirm", ""):
        return ["The two passwords differ."]
    return []


def link_pages(settings: Settings) -> list[Route]:
    async def invitation(request: Request) -> HTMLResponse:
        if request.method == "POST" and not _from_this_site(request):
            return _page(403, title="Invitation", errors=[CROSS_SITE])
        form = await _form(request) if request.method == "POST" else {}
        token = form.get("token") or request.query_params.get("token", "")
        status, found = await invitations.check(token)
        if status != invitations.Status.PENDING or found is None:
            code = 404 if found is None else 410
            return _page(code, title="Invitation", errors=[invitations.refusal(status)])
        account = await Account.get(pk=found.account_id)
        known = await PortalUser.exists(
            firm_id=found.firm_id, email_normalized=found.email_normalized
        )
        values = {
            "title": f"Your portal access: {account.name}",
            "lead": f"This invitation is for {found.email}."
            + (" You already have a password: continue to add this account." if known else ""),
            "form": True,
            "action": "/invitation",
            "token": token,
            "ask_password": not known,
            "button": "Continue" if known else "Set password and enter",
        }
        if request.method == "GET":
            return _page(**values)
        errors = [] if known else _password_mismatch(form)
        if errors:
            return _page(400, errors=errors, **values)
        try:
            signed_in, _ = await signin.accept_invitation(
                token,
                form.get("password"),
                signin.SignInPolicy.from_settings(settings),
                _origin(request),
            )
        except InputError as exc:
            return _page(400, errors=[e.message for e in exc.errors], **values)
        if not isinstance(signed_in, signin.SignedIn):
            return _page(title=f"Welcome to {account.name}", done=AUTHENTICATOR_NEXT)
        response = _page(
            title=f"Welcome to {account.name}",
            done=f"You are signed in to the portal of {account.name}.",
        )
        _sign_in(response, signed_in, settings)
        return response

    async def password(request: Request) -> HTMLResponse:
        if request.method == "POST" and not _from_this_site(request):
            return _page(403, title="Set your password", errors=[CROSS_SITE])
        form = await _form(request) if request.method == "POST" else {}
        token = form.get("token") or request.query_params.get("token", "")
        status = await password_links.check(token)
        if status != "PENDING":
            code = 404 if status == "INVALID" else 410
            return _page(
                code, title="Set your password", errors=[password_links.REFUSALS[status][1]]
            )
        values = {
            "title": "Set your password",
            "form": True,
            "action": "/password",
            "token": token,
            "ask_password": True,
            "button": "Set password",
        }
        if request.method == "GET":
            return _page(**values)
        errors = _password_mismatch(form)
        if errors:
            return _page(400, errors=errors, **values)
        try:
            signed_in, member = await signin.set_first_password(
                token,
                form.get("password", ""),
                signin.SignInPolicy.from_settings(settings),
                _origin(request),
            )
        except InputError as exc:
            return _page(400, errors=[e.message for e in exc.errors], **values)
        if not isinstance(signed_in, signin.SignedIn):
            return _page(title="Password set", done=AUTHENTICATOR_NEXT)
        response = _page(title="Password set", done=f"Welcome, {member.name}: you are signed in.")
        _sign_in(response, signed_in, settings)
        return response

    async def end_sessions(request: Request) -> HTMLResponse:
        """The new-device notice's link: a button (a link scanner's GET ends nothing)."""
        title = "End all your sessions"
        if request.method == "POST" and not _from_this_site(request):
            return _page(403, title=title, errors=[CROSS_SITE])
        form = await _form(request) if request.method == "POST" else {}
        token = form.get("token") or request.query_params.get("token", "")
        if not devices.link_works(token, settings):
            return _page(404, title=title, errors=[END_LINK_INVALID])
        if request.method == "GET":
            return _page(
                title=title,
                lead="Signs you out everywhere: every browser and app, this one too.",
                form=True,
                action="/sessions/end",
                token=token,
                button="End all my sessions",
            )
        ended = await devices.end_all_sessions(token, settings)
        if ended is None:
            return _page(404, title=title, errors=[END_LINK_INVALID])
        return _page(
            title=title,
            done="Done: every session is ended. Now change your password, and tell the firm.",
        )

    return [
        Route("/invitation", invitation, methods=["GET", "POST"]),
        Route("/password", password, methods=["GET", "POST"]),
        Route("/sessions/end", end_sessions, methods=["GET", "POST"]),
    ]
