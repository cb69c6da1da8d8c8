"""A real webhook receiver on loopback, as a firm would write one: it verifies each request's
Standard Webhooks signature with the reference library and processes each webhook-id once
(a repeat is answered 200 and dropped), in a thread beside the test's event loop."""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Received:
    """One request as it came."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """`answers`: the status of each coming request in turn (then `default`); `hold`: while
    set, a request is processed but its answer waits until `released` is set."""

    secret: str = ""
    default: int = 204
    cookie: str | None = None  # set on every answer (a sender must not send it back)
    gzip_body: bytes | None = None  # an error body sent gzip-encoded as is
    echo: bool = False  # an error answer repeats the request's body (as some receivers do)
    answers: deque[int] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    processed: dict[str, dict[str, Any]] = field(default_factory=dict)  # by webhook-id
    hold: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, seconds: float = 10.0) -> list[Received]:
        """The requests once `count` have come (AssertionError after `seconds`)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.received) >= count, seconds):
                raise AssertionError(f"{len(self.received)} of {count} webhook requests came")
            return list(self.received)

    def events(self, kind: str) -> list[dict[str, Any]]:
        """The processed events of one type, in the order they came."""
        return [e for e in self.processed.values() if e["type"] == kind]

    def _take(self, path: str, headers: dict[str, str], body: bytes) -> int:
        verified = True
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            verified = False
        request = Received(path, headers, body, verified)
        with self.arrived:
            self.received.append(request)
            self.arrived.notify_all()
        if not verified:
            return 401
        status = self.answers.popleft() if self.answers else self.default
        if 200 <= status < 300:
            self.processed.setdefault(request.id, request.event)  # a repeat is dropped
        if self.hold.is_set():  # processed, but the answer is late (the sender may be gone)
            self.released.wait(30)
        return status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver._take(self.path, headers, body)
                answer = b"" if status == 204 else f"status {status} from the receiver".encode()
                if receiver.echo and status >= 300:
                    answer = body
                self.send_response(status)
                if receiver.cookie:
                    self.send_header("set-cookie", receiver.cookie)
                if receiver.gzip_body is not None and status >= 300:
                    answer = receiver.gzip_body
                    self.send_header("content-encoding", "gzip")
                if 300 <= status < 400:
                    self.send_header("location", receiver.url + "/moved")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
