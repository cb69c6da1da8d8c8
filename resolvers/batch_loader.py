"""The request's batching loader: strawberry's DataLoader contract (`load`, `load_many`; the
keys asked in one turn of the event loop answered by one call of the load function; each
key's answer kept for the request), at a fraction of its cost per key.

strawberry's DataLoader gives every key a future with a done callback, and its `load_many`
gathers them: about 3 µs a key, and a page of the account list asks for hundreds. Here a
key costs a dictionary entry: the batch has the one future, and the answers are kept by key.
The batches are closed exactly when strawberry's are (tests/test_loader_batches.py compares
them), so the SQL a request runs does not change.

Callers cannot cancel what they share: each call is shielded. The stock executor cancels
the pending siblings of a field that failed; a cancelled caller must not cancel the answer
other fields share for the same key (a CancelledError would then end the whole operation
instead of one field's error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from strawberry.dataloader import WrongNumberOfResultsReturned

K = TypeVar("K")
V = TypeVar("V")


class _Batch(Generic[K]):
    __slots__ = ("closed", "done", "keys", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.keys: list[K] = []
        self.closed = False  # the load function has been called: later keys start a new batch
        self.done: asyncio.Future[None] = loop.create_future()
        self.task: asyncio.Task[None] | None = None  # held: the loop keeps only weak ones


class Loader(Generic[K, V]):
    def __init__(self, load_fn: Callable[[Sequence[K]], Awaitable[Sequence[Any]]]) -> None:
        self.load_fn = load_fn
        self._answers: dict[K, V] = {}
        self._failures: dict[K, BaseException] = {}
        self._pending: dict[K, _Batch[K]] = {}  # keys asked for whose batch has not answered
        self._batch: _Batch[K] | None = None

    def load(self, key: K) -> Awaitable[V]:
        keys = [key]
        return asyncio.shield(self._one(keys, self._asked(keys)))

    def load_many(self, keys: Iterable[K]) -> Awaitable[list[V]]:
        keys = list(keys)
        return asyncio.shield(self._many(keys, self._asked(keys)))

    def _asked(self, keys: list[K]) -> list[_Batch[K]]:
        """Puts the keys not yet asked for into the open batch (now, not when the caller
        first awaits); the batches to wait for."""
        waits: list[_Batch[K]] = []
        for key in keys:
            if key in self._answers or key in self._failures:
                continue
            batch = self._pending.get(key)
            if batch is None:
                batch = self._pending[key] = self._open_batch()
                batch.keys.append(key)
            if not waits or waits[-1] is not batch:
                waits.append(batch)
        return waits

    async def _one(self, keys: list[K], waits: list[_Batch[K]]) -> V:
        return (await self._many(keys, waits))[0]

    async def _many(self, keys: list[K], waits: list[_Batch[K]]) -> list[V]:
        for batch in waits:
            await batch.done
        failures = self._failures
        if failures:
            for key in keys:
                if key in failures:
                    raise failures[key]
        answers = self._answers
        return [answers[key] for key in keys]

    def _open_batch(self) -> _Batch[K]:
        batch = self._batch
        if batch is None or batch.closed:
            loop = asyncio.get_running_loop()
            batch = self._batch = _Batch(loop)
            # As strawberry's: the batch is scheduled now, its task created on the next turn,
            # and it closes when that task starts; keys asked until then join it.
            loop.call_soon(self._start, batch)
        return batch

    def _start(self, batch: _Batch[K]) -> None:
        batch.task = asyncio.ensure_future(self._dispatch(batch))

    async def _dispatch(self, batch: _Batch[K]) -> None:
        batch.closed = True
        keys = batch.keys
        try:
            values = list(await self.load_fn(keys))
            if len(values) != len(keys):
                raise WrongNumberOfResultsReturned(expected=len(keys), received=len(values))
        except BaseException as error:  # every key of the batch fails with it, as strawberry's
            self._settle(batch, [error] * len(keys))
            if not isinstance(error, Exception):
                raise  # cancelled (the loop is closing): its waiters are told, then it stops
            return
        self._settle(batch, values)

    def _settle(self, batch: _Batch[K], values: list[Any]) -> None:
        for key, value in zip(batch.keys, values, strict=True):
            del self._pending[key]
            if isinstance(value, BaseException):
                self._failures[key] = value
            else:
                self._answers[key] = value
        batch.done.set_result(None)
