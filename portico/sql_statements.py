"""Counts the SQL statements an HTTP request sends, for portico_sql_statements_per_request.

Tortoise has no hook where a statement goes out, and its debug log (what
tests/support/sqlcount.py counts) would cost a log record per statement. So `install()`
wraps, once per process, the methods of Tortoise's SQLite and asyncpg clients that send a
statement: exactly those that log one at debug level, so both count the same. The wrapper is
a plain function that adds one to the current request's count and returns the original
coroutine (no extra frame, nothing awaited). Outside a request (the worker's loops, the CLI,
a WebSocket) there is no count and nothing is added.

A count is a one-element list in a ContextVar: tasks started by the request (DataLoaders'
batches, gathers) copy the context and so add to the same list.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base_postgres.client import BasePostgresClient
from tortoise.backends.sqlite.client import SqliteClient, SqliteTransactionWrapper

from portico.db_clients.sqlite import SqliteClient as OwnSqliteClient

# The methods that send one statement (execute_many: one statement, many rows). None calls
# another of them, so a statement is never counted twice.
METHODS = (
    "execute_insert",
    "execute_many",
    "execute_query",
    "execute_query_dict",
    "execute_script",
)
CLIENTS: tuple[type, ...] = (
    SqliteClient,
    OwnSqliteClient,
    SqliteTransactionWrapper,
    BasePostgresClient,
    AsyncpgDBClient,
    TransactionWrapper,
)

_count: ContextVar[list[int] | None] = ContextVar("portico_sql_statements", default=None)


def install() -> None:
    """Wrap the clients' statement methods (again: nothing happens)."""
    for client in CLIENTS:
        for name in METHODS:
            method = client.__dict__.get(name)  # its own, not one it inherits (wrapped there)
            if method is None or getattr(method, "__isabstractmethod__", False):
                continue
            if not getattr(method, "_counts_statements", False):
                setattr(client, name, _counting(method))


def _counting(method: Callable[..., Any]) -> Callable[..., Any]:
    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        count = _count.get()
        if count is not None:
            count[0] += 1
        return method(self, *args, **kwargs)

    counted._counts_statements = True  # type: ignore[attr-defined]
    counted.__name__ = method.__name__
    counted.__qualname__ = method.__qualname__
    counted.__doc__ = method.__doc__
    return counted


def start() -> tuple[list[int], Token[list[int] | None]]:
    """A new count for the request running in this context."""
    count = [0]
    return count, _count.set(count)


def stop(token: Token[list[int] | None]) -> None:
    """This context counts no more (the request has been answered)."""
    _count.reset(token)
