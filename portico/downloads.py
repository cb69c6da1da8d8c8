"""GET /documents/{id}: a document's bytes, for a viewer allowed to see its account.
GET /exports/{token}: a contact's data export, for whoever holds the short-lived link."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse

from portico.rate_limit import request_session
from portico.settings import Settings
from resolvers.context import token_from_request
from schema import ids
from services.crm import privacy
from services.firm import enrollment
from services.portal import documents
from services.shared import files


def download_document(settings: Settings) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        token = token_from_request(request)
        session = await request_session(request, token)
        if session is not None and await enrollment.session_must_enroll(session):
            session = None  # a session that may only set up an authenticator reads nothing
        document = await documents.readable(
            session, ids.decode(request.path_params["id"], "Document")
        )
        content = await files.find(settings, document.sha256) if document else None
        if document is None or content is None:
            # Missing, another firm's, or not yours: the same answer.
            return PlainTextResponse("Not found", status_code=404)
        headers = {
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(document.filename)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
            "Cache-Control": "private, no-store",
        }
        if content.path is not None:  # the folder's file: sent as it is (ranges, ETag)
            return FileResponse(content.path, media_type=document.content_type, headers=headers)
        # The database's chunks, one at a time: never the whole file in memory.
        headers["Content-Length"] = str(content.size)
        return StreamingResponse(
            content.chunks(), media_type=document.content_type, headers=headers
        )

    return endpoint


def download_export(settings: Settings) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            bundle = await privacy.open_link(request.path_params["token"], settings)
        except privacy.LinkRefused as refused:
            if refused.expired:
                return PlainTextResponse("This link has expired.", status_code=410)
            return PlainTextResponse("Not found", status_code=404)

        def chunks() -> Iterator[bytes]:
            with bundle.content:
                while chunk := bundle.content.read(files.CHUNK):
                    yield chunk

        return StreamingResponse(
            chunks(),
            media_type="application/zip",
            headers={
                "Content-Disposition": f"attachment; filename={bundle.filename}",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "private, no-store",
                "Referrer-Policy": "no-referrer",
            },
        )

    return endpoint
