"""PostgreSQL's client: a transaction whose BEGIN is cancelled or fails gives its
connection back to the pool."""

from __future__ import annotations

from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base.client import (
    TransactionalDBClient,
    TransactionContext,
    TransactionContextPooled,
)
from tortoise.connection import get_connections


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
