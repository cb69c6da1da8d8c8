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

# What the mail store treats as the database's failure (its pass fails, nothing of the chunk
# is written): any connection trouble, an operator's intervention (shutdown, cancel), and any
# OSError (a socket, or the file store's disk).
_STORE_LOST = (
    OSError,
    DBConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)

# What the API answers 503 UNAVAILABLE for: the connection refused, cut or closed, or the
# server shutting down, crashed or starting up. Not a cancelled query (statement_timeout,
# pg_cancel_backend) nor asyncpg's InterfaceErrors of a code bug (a bad argument).
_UNREACHABLE = (
    DBConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.ClientCannotConnectError,
    asyncpg.exceptions.ConnectionRejectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    # A pooled connection left mid-operation by a dying server, met again at its release.
    asyncpg.exceptions.InternalClientError,
)


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc`, or what it arose from (a failed rollback hides the first error), is
    the mail store's cue to fail its pass (_STORE_LOST)."""
    return any(isinstance(error, _STORE_LOST) for error in _chain(exc))


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc`, or what it arose from, is the database out of reach: one of
    _UNREACHABLE, asyncpg's "connection is closed", or an OSError (refused, reset, timed out)
    that the database driver raised; a full disk or an unreachable mail host is not."""
    for error in _chain(exc):
        if isinstance(error, _UNREACHABLE):
            return True
        if isinstance(error, asyncpg.exceptions.InterfaceError) and "closed" in str(error):
            return True
        if isinstance(error, OSError) and _from_driver(error):
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
    """`work` run in a task of its own, for a loop's round: whatever a failed round leaves in
    its context (Tortoise's current transaction, before portico/db_clients reset it when
    BEGIN fails) ends with it, and the loop's next round starts clean."""
    return await asyncio.create_task(work, name=name)
