"""Lookups made at the same moment, answered by one query.

One synced message wakes every subscriber of its firm at once; each must check its session
and load the message. `Coalesced(batch)` is a loader whose `load(key)` calls, made in the
same turn of the event loop, go to `batch` together: 1,000 subscribers cost one query, not
1,000. Nothing is cached between turns, so every answer is as fresh as a lone query's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar
from weakref import WeakKeyDictionary

from strawberry.dataloader import DataLoader

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalesced(Generic[K, V]):
    """`batch(keys) -> values` (same order) shared by concurrent callers of `load`."""

    def __init__(self, batch: Callable[[Sequence[K]], Awaitable[list[V]]]) -> None:
        self.batch = batch
        # A DataLoader belongs to one event loop (tests run many); one per running loop.
        self._loaders: WeakKeyDictionary[asyncio.AbstractEventLoop, DataLoader[K, V]] = (
            WeakKeyDictionary()
        )

    async def load(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        loader = self._loaders.get(loop)
        if loader is None:
            loader = self._loaders[loop] = DataLoader(self.batch, cache=False)
        return await loader.load(key)
