"""GET /readyz: the database reachable and migrated, and Redis answering when configured,
within a probe's timeout whatever the network does: a database host that stops answering
(no reset, no refusal) must give 503 in seconds, not when TCP gives up minutes later."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.requests import Request
from starlette.responses import JSONResponse

from portico import db
from portico.settings import Settings

DATABASE_PROBE_SECONDS = 2.0
REDIS_PROBE_SECONDS = 1.0

Answer = tuple[int, dict[str, object]]


def readyz_endpoint(settings: Settings) -> Callable[[Request], Awaitable[JSONResponse]]:
    database = DatabaseProbe()

    async def readyz(request: Request) -> JSONResponse:
        status, body = await database.check()
        if status == 200 and settings.redis_url is not None:
            error = await redis_error(settings.redis_url)
            if error is not None:
                status, body = 503, {"status": "unavailable", "failed": "redis", "error": error}
        return JSONResponse(body, status)

    return readyz


class DatabaseProbe:
    """One database check at a time: probes that come while one is under way (or hangs on a
    dead host) wait on the same one, up to the deadline, so they never pile up."""

    def __init__(self) -> None:
        self._task: asyncio.Task[Answer] | None = None

    async def check(self) -> Answer:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(_database_state())
        try:
            return await asyncio.wait_for(asyncio.shield(self._task), DATABASE_PROBE_SECONDS)
        except TimeoutError:
            return 503, _unavailable("TimeoutError")


async def _database_state() -> Answer:
    try:
        # A query of its own first: with the database away, the migration plan reads as
        # "nothing applied" rather than failing.
        await db.ping()
        pending = await db.pending_migrations()
    except Exception as exc:  # any database failure means "not ready"
        return 503, _unavailable(type(exc).__name__)
    if pending:
        return 503, {"status": "migrations pending", "pending": pending}
    return 200, {"status": "ready"}


def _unavailable(error: str) -> dict[str, object]:
    return {"status": "unavailable", "failed": "database", "error": error}


async def redis_error(url: str) -> str | None:
    """None when Redis at `url` answers PING in time, else what went wrong (a class name)."""
    client = Redis.from_url(
        url,
        socket_connect_timeout=REDIS_PROBE_SECONDS,
        socket_timeout=REDIS_PROBE_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        async with asyncio.timeout(2 * REDIS_PROBE_SECONDS):
            await client.ping()
    except Exception as exc:  # refused, timed out, auth: all "not ready"
        return type(exc).__name__
    finally:
        await client.aclose()
    return None
