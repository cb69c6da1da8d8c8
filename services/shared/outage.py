"""Telling the database going away (a restart, a failover, a cut network) from the data being
refused: the API answers the first 503 (retry shortly), the mail store fails its pass."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import asyncpg
from tortoise import Tortoise
from tortoise.exceptions import DBConnectionError

T = TypeVar("T")

MESSAGE = "The database is unavailable: retry shortly"

# asyncpg's errors for a connection closed, refused or cut, and a server shutting down or
# starting up (CannotConnectNowError is an OperatorInterventionError).
_LOST = (
    DBConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc`, or what it arose from (a failed rollback hides the first error), is the
    database connection going away or not to be had, or any other OSError (the mail store
    fails its pass on either: nothing of the chunk is written)."""
    return any(isinstance(e, (OSError, *_LOST)) for e in _chain(exc))


def database_unreachable(exc: BaseException) -> bool:
    """As `connection_lost`, but an OSError counts only when the database driver raised it:
    a request that fails on a full disk or an unreachable mail host is not an outage."""
    for error in _chain(exc):
        if isinstance(error, _LOST) or (isinstance(error, OSError) and _from_driver(error)):
            return True
    return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _from_driver(exc: BaseException) -> bool:
    """Whether `exc` was raised inside asyncpg or Tortoise's database clients."""
    frame = exc.__traceback__
    while frame is not None:
        module = frame.tb_frame.f_globals.get("__name__", "")
        if module.startswith(("asyncpg", "tortoise.backends")):
            return True
        frame = frame.tb_next
    return False


async def renew_connections() -> None:
    """After a lost connection, every pooled connection to PostgreSQL is replaced on its next
    use: the server may have cut them all (restart, failover, pg_terminate_backend), and one
    left mid-rollback must not serve the next statement."""
    pool = getattr(Tortoise.get_connection("default"), "_pool", None)
    if isinstance(pool, asyncpg.Pool):
        await pool.expire_connections()


async def in_own_task(work: Coroutine[Any, Any, T], name: str) -> T:
    """`work` run in a task of its own, for a loop's round: when BEGIN fails (the database
    restarted under a pooled connection) tortoise leaves that transaction as the current one
    of the task that ran it, and every later transaction of that task would nest in it (a
    savepoint on a connection back in the pool) until the process restarts."""
    return await asyncio.create_task(work, name=name)
