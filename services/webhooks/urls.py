"""Where a webhook may be sent: an http(s) URL with a host, https only in production, and in
production a host whose every address is public (services/shared/network vets it as it does
mail hosts). The check here refuses a bad endpoint when it is registered; the sender must
resolve and vet again for each request (a DNS answer may change: rebinding)."""

from __future__ import annotations

import asyncio
from urllib.parse import SplitResult, urlsplit

from portico.settings import Settings
from services.shared import network
from services.shared.errors import ErrorCode, input_error

MAX_URL_LENGTH = 2048
RESOLVE_SECONDS = 10.0  # a resolver that never answers must not hold the request


def private_hosts_allowed(settings: Settings) -> bool:
    """Loopback and private receivers: development only."""
    return not settings.production


def parse_url(raw: str, settings: Settings) -> SplitResult:
    """The URL's parts, or INVALID_URL on ("input", "url") saying what is wrong with it."""
    url = raw.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise _invalid(f"The URL must be 1 to {MAX_URL_LENGTH} characters.")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise _invalid("The URL may not hold spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port  # a port out of range or not a number raises here
    except ValueError:
        raise _invalid("Not a URL.") from None
    allowed = ("https",) if settings.production else ("http", "https")
    if parts.scheme.lower() not in allowed:
        raise _invalid(
            "The URL must start with https://."
            if settings.production
            else "The URL must start with http:// or https://."
        )
    if not parts.hostname:
        raise _invalid("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        # The signature authenticates Portico; a password in the URL would be shown and kept.
        raise _invalid("The URL may not carry a user name or password.")
    if parts.fragment:
        raise _invalid("The URL may not have a #fragment (it is never sent).")
    if port == 0:
        raise _invalid("The URL's port must be between 1 and 65535.")
    if not network.has_ascii_form(parts.hostname):
        raise _invalid("The URL's host is not a host name or IP address.")
    return parts


async def check_url(raw: str, settings: Settings) -> str:
    """The URL as stored (trimmed), once its syntax is right and, in production, its host
    resolves to public addresses only (HOST_NOT_ALLOWED otherwise)."""
    parts = parse_url(raw, settings)
    if not private_hosts_allowed(settings):
        await _vet(parts)
    return raw.strip()


async def _vet(parts: SplitResult) -> None:
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            await network.resolve(host, port, allow_private=False)
    except network.HostNotAllowed:
        raise input_error(
            ErrorCode.HOST_NOT_ALLOWED,
            f"{host} is not on the public internet (a loopback, private, link-local or "
            "reserved address): webhooks go only to public hosts.",
            "input",
            "url",
        ) from None
    except (OSError, TimeoutError):  # socket.gaierror is an OSError
        raise _invalid(f"The URL's host {host} does not resolve.") from None


def _invalid(message: str) -> Exception:
    return input_error(ErrorCode.INVALID_URL, message, "input", "url")
