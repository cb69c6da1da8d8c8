"""One webhook POST: signed (Standard Webhooks), to a vetted address, read safely.

- Each POST vets the URL's host again (a DNS answer may change after registration): in
  production every address must be public, and the request goes to those addresses in turn
  (the Host header and TLS name stay the URL's, in their ASCII form), so a second lookup
  cannot point it elsewhere (DNS rebinding).
- The client keeps no cookies and no idle connections: one firm's receiver can neither set
  state for another's requests nor share a TLS connection checked against another name.
- Redirects are not followed (a 3xx is a failed attempt); answers are asked uncompressed and
  only their first bytes are read, raw: an error body cannot grow in memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx
import orjson

from models import WebhookDelivery, WebhookEndpoint
from portico.settings import Settings
from services.shared import network
from services.webhooks import endpoints, signing, urls

TIMEOUT_SECONDS = 15.0  # the whole POST, answer included
MAX_ERROR_CHARS = 500  # of a receiver's answer kept as the attempt's error
USER_AGENT = "Portico-Webhooks/1"

Resolver = Callable[..., Awaitable[network.Destination]]


@dataclass(frozen=True)
class Outcome:
    """What one POST came to."""

    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Target:
    """Where one request goes: the URLs to try in turn, the Host header, the TLS name."""

    urls: list[str]
    host: str | None = None
    sni_hostname: str | None = None


def new_client() -> httpx.AsyncClient:
    """The HTTP client a sender keeps: no redirects, no proxies from the environment, no
    cookies, no connection kept between requests (module doc)."""
    return httpx.AsyncClient(
        follow_redirects=False,
        timeout=TIMEOUT_SECONDS,
        trust_env=False,
        cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
        limits=httpx.Limits(max_keepalive_connections=0),
    )


async def post(
    settings: Settings,
    client: httpx.AsyncClient,
    endpoint: WebhookEndpoint,
    row: WebhookDelivery,
    resolve: Resolver = network.resolve,
) -> Outcome:
    """One signed POST of the delivery's body; the receiver's faults are the outcome's error.
    Raises only for Portico's own (a secret it cannot decrypt): nothing was sent then."""
    body = orjson.dumps(row.payload)
    secrets_ = endpoints.signing_secrets(settings, endpoint)
    started = datetime.now(UTC)
    clock = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        where = await target(endpoint.url, settings, resolve)
    except network.HostNotAllowed:
        error = "The host no longer resolves to public addresses only: not sent."
    except (OSError, TimeoutError):
        error = "The host did not resolve: not sent."
    else:
        headers = {"content-type": "application/json", "user-agent": USER_AGENT}
        headers["accept-encoding"] = "identity"
        if where.host:
            headers["host"] = where.host
        headers.update(signing.headers(secrets_, row.event_id, int(time.time()), body))
        extensions = {"sni_hostname": where.sni_hostname} if where.sni_hostname else {}
        status, error = await _send(client, where.urls, body, headers, extensions)
    duration = round((time.perf_counter() - clock) * 1000)
    return Outcome(started, duration, status, error)


async def _send(
    client: httpx.AsyncClient,
    tries: list[str],
    body: bytes,
    headers: dict[str, str],
    extensions: dict[str, str],
) -> tuple[int | None, str | None]:
    """The status and error of the POST to the first address that takes the connection."""
    error = "No address to send to."
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            for url in tries:
                try:
                    async with client.stream(
                        "POST", url, content=body, headers=headers, extensions=extensions
                    ) as answer:
                        status = answer.status_code
                        if 200 <= status < 300:
                            return status, None
                        return status, f"HTTP {status}" + _excerpt(await _head(answer))
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    error = f"Could not connect: {type(exc).__name__}" + _excerpt(str(exc))
    except TimeoutError:
        return None, f"No answer within {TIMEOUT_SECONDS:g} seconds."
    except httpx.HTTPError as exc:
        return None, f"The request failed: {type(exc).__name__}" + _excerpt(str(exc))
    return None, error


async def target(raw_url: str, settings: Settings, resolve: Resolver = network.resolve) -> Target:
    """Where to send: in production the URL rewritten to each vetted public address of its
    host; else the URL as it is."""
    url = raw_url.strip()
    if urls.private_hosts_allowed(settings):
        return Target([url])
    parts = urlsplit(url)
    host = (parts.hostname or "").encode("idna").decode("ascii")
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    async with asyncio.timeout(urls.RESOLVE_SECONDS):
        destination = await resolve(host, port, allow_private=False)
    addresses = list(dict.fromkeys(str(sockaddr[0]) for _, sockaddr in destination.addresses))
    bracketed = f"[{host}]" if ":" in host else host  # an IPv6 literal
    shown_host = f"{bracketed}:{parts.port}" if parts.port else bracketed
    return Target([_with_address(parts, a) for a in addresses], shown_host, host)


def _with_address(parts: SplitResult, address: str) -> str:
    shown = f"[{address}]" if ":" in address else address
    netloc = f"{shown}:{parts.port}" if parts.port else shown
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


async def _head(answer: httpx.Response) -> str:
    """The first bytes of an answer's body as text (raw: never decompressed)."""
    if answer.headers.get("content-encoding", "identity").lower() != "identity":
        return "(a compressed answer, not shown)"
    kept = b""
    async for chunk in answer.aiter_raw():
        kept += chunk
        if len(kept) >= MAX_ERROR_CHARS:
            break
    return kept[:MAX_ERROR_CHARS].decode("utf-8", "ignore")


def _excerpt(text: str) -> str:
    cleaned = " ".join(text.split())[:MAX_ERROR_CHARS]
    return f": {cleaned}" if cleaned else ""
