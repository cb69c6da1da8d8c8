"""SQLite's client: a transaction whose BEGIN is cancelled or fails unlocks the connection,
once a rollback has ended a BEGIN that aiosqlite's thread ran anyway; a bulk insert outside a
transaction that is cancelled is rolled back, not left open."""

from __future__ import annotations

import asyncio
from typing import Any

from tortoise.backends.base.client import TransactionalDBClient, TransactionContext
from tortoise.backends.sqlite import client as sqlite
from tortoise.connection import get_connections

# Rollbacks that end a cancelled BEGIN, kept referenced until they are done.
_ending: set[asyncio.Task[None]] = set()


class SqliteClient(sqlite.SqliteClient):
    def _in_transaction(self) -> TransactionContext:
        return _SqliteTransaction(sqlite.SqliteTransactionWrapper(self), self._lock)

    @sqlite.translate_exceptions
    async def execute_many(self, query: str, values: list[list[Any]]) -> None:
        # Tortoise's own rolled back on an Exception only: cancelled, its rows stayed in an
        # open transaction, and the statements after it too, until a later one committed.
        async with self.acquire_connection() as connection:
            self.log.debug("%s: %s", query, values)
            try:
                await connection.execute("BEGIN")
                await connection.executemany(query, values)
            except BaseException:
                await connection.rollback()  # queued behind them: runs even if cancelled again
                raise
            await connection.commit()


client_class = SqliteClient


class _SqliteTransaction(sqlite.SqliteTransactionContext):
    async def __aenter__(self) -> TransactionalDBClient:
        await self._trxlock.acquire()
        try:
            await self.ensure_connection()
        except BaseException:
            self._trxlock.release()
            raise
        self.token = get_connections().set(self.connection_name, self.connection)
        try:
            await self.connection.begin()
        except BaseException:
            get_connections().reset(self.token)
            # aiosqlite's thread runs the BEGIN whether or not anyone still waits for it:
            # the lock is released only once a rollback queued behind it has ended it.
            ending = asyncio.create_task(_rollback_then_release(self.connection, self._trxlock))
            _ending.add(ending)
            ending.add_done_callback(_ending.discard)
            raise
        return self.connection


async def _rollback_then_release(
    transaction: sqlite.SqliteTransactionWrapper, lock: asyncio.Lock
) -> None:
    try:
        await transaction._connection.rollback()  # nothing to do when BEGIN never ran
    finally:
        lock.release()
