"""Pure ASGI middleware: a request-size ceiling (HTTP bodies and WebSocket messages), and one
structured log line per request with its metrics."""

from __future__ import annotations

import logging
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico import metrics, sql_statements
from portico.refusals import error_json
from services.shared.errors import ErrorCode

access_log = logging.getLogger("portico.access")
# Paths whose rest is a secret (a bearer link): logged as the prefix and an ellipsis.
SECRET_PATHS = ("/exports/",)


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413, whether announced or streamed;
    multipart uploads may carry `max_upload_bytes` more. A WebSocket message over `max_bytes`
    closes its socket with 1009 (Message Too Big), as uvicorn's ws_max_size does."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int = 0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            socket = _CappedSocket(receive, send, self.max_bytes)
            await self.app(scope, socket.receive, socket.send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit = self.max_bytes
        if headers.get(b"content-type", b"").startswith(b"multipart/form-data"):
            limit += self.max_upload_bytes
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _too_large(send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _too_large(send)


class _BodyTooLarge(Exception):
    pass


MESSAGE_TOO_BIG = 1009  # RFC 6455's close code, which every WebSocket client knows


class _CappedSocket:
    """A WebSocket's receive and send: a message over `max_bytes` closes the socket, and the
    app sees a disconnect (its later sends go nowhere)."""

    def __init__(self, receive: Receive, send: Send, max_bytes: int) -> None:
        self._receive = receive
        self._send = send
        self.max_bytes = max_bytes
        self.closed = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "websocket.receive" and _too_big(message, self.max_bytes):
            reason = f"Message over {self.max_bytes} bytes"
            await self._send({"type": "websocket.close", "code": MESSAGE_TOO_BIG, "reason": reason})
            self.closed = True
            return {"type": "websocket.disconnect", "code": MESSAGE_TOO_BIG}
        return message

    async def send(self, message: Message) -> None:
        if not self.closed:
            await self._send(message)


def _too_big(message: Message, max_bytes: int) -> bool:
    text = message.get("text")
    if text is None:
        return len(message.get("bytes") or b"") > max_bytes
    # 1 to 4 bytes a character in UTF-8: encode only when the length leaves it open.
    return len(text) > max_bytes or (len(text) * 4 > max_bytes and len(text.encode()) > max_bytes)


async def _too_large(send: Send) -> None:
    body = error_json("Request body too large", ErrorCode.PAYLOAD_TOO_LARGE)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AccessLog:
    """One JSON line per HTTP request: method, path (without the secret of a link), GraphQL
    operation, status, duration; and the same request in the HTTP metrics, with the SQL
    statements it sent (portico/sql_statements.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        sql_statements.install()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        statements, counting = sql_statements.start()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            sql_statements.stop(counting)
            seconds = time.perf_counter() - started
            metrics.record_request(scope, status, seconds, statements[0])
            state = scope.get("state") or {}
            access_log.info(
                orjson.dumps(
                    {
                        "method": scope["method"],
                        "path": logged_path(scope["path"]),
                        "operation": state.get("graphql_operation"),
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                    }
                ).decode()
            )


def logged_path(path: str) -> str:
    """`path`, with the token of a SECRET_PATHS link replaced by an ellipsis."""
    for prefix in SECRET_PATHS:
        if path.startswith(prefix):
            return f"{prefix}…"
    return path
