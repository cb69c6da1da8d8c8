"""PostgreSQL's client: a transaction whose BEGIN is cancelled or fails gives its
connection back to the pool; a task cancelled again as its transaction ends is outside it."""

from __future__ import annotations

from typing import Any

from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base.client import (
    TransactionalDBClient,
    TransactionContext,
    TransactionContextPooled,
)
from tortoise.connection import get_connections
from tortoise.exceptions import TransactionManagementError


class PostgresClient(AsyncpgDBClient):
    def _in_transaction(self) -> TransactionContext:
        return _PooledTransaction(TransactionWrapper(self), self._pool_init_lock)


client_class = PostgresClient


class _PooledTransaction(TransactionContextPooled):
    async def __aenter__(self) -> TransactionalDBClient:
        await self.ensure_connection()
        pool = self.client._parent._pool
        self.client._connection = await pool.acquire()
        self.token = get_connections().set(self.connection_name, self.client)
        try:
            await self.client.begin()
        except BaseException:
            get_connections().reset(self.token)
            # asyncpg shields the release, and its reset rolls back a BEGIN that ran.
            await pool.release(self.client._connection)
            raise
        return self.client

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        try:
            if not self.client._finalized:
                if exc_type is None:
                    await self.client.commit()
                elif exc_type is not TransactionManagementError:  # failed: nothing to undo
                    await self.client.rollback()
        finally:
            # Tortoise reset it after the release: a task cancelled again while the release
            # was waited for stayed in the transaction, on a connection given back.
            get_connections().reset(self.token)
            if self.client._parent._pool:
                await self.client._parent._pool.release(self.client._connection)
