"""The request's batching loader: strawberry's DataLoader contract (`load`, `load_many`; the
keys asked in one turn of the event loop answered by one call of the load function; each
key's answer kept for the request), at a fraction of its cost per key.

strawberry's DataLoader gives every key a future with a done callback, and its `load_many`
gathers them: about 3 µs a key, and a page of the account list asks for hundreds. Here a
key costs a dictionary entry: each call gets one future, resolved once the batches holding
its keys have answered, and the answers are kept by key. Batches close when strawberry's
do and calls are answered on the same turns of the loop as before (`_deliver`), so the same
keys meet in a batch (tests/test_loader_batches.py compares them).

Callers cannot cancel what they share: a caller's future is its own, so cancelling it (the
stock executor cancels the pending siblings of a field that failed) leaves the batch and
the other callers alone, where a shared future would have ended the whole operation with a
CancelledError instead of one field's error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

from strawberry.dataloader import WrongNumberOfResultsReturned

K = TypeVar("K")
V = TypeVar("V")


class _Batch(Generic[K]):
    __slots__ = ("closed", "keys", "task", "waiters")

    def __init__(self) -> None:
        self.keys: list[K] = []
        self.closed = False  # the load function has been called: later keys start a new batch
        self.waiters: list[_Waiter] = []  # the calls waiting for this batch, among others
        self.task: asyncio.Task[None] | None = None  # held: the loop keeps only weak ones


class _Waiter:
    """One call waiting for `batches` more batches to answer."""

    __slots__ = ("batches", "future", "keys", "one")

    def __init__(self, future: asyncio.Future[Any], keys: list[Any], one: bool) -> None:
        self.future, self.keys, self.one, self.batches = future, keys, one, 0


class Loader(Generic[K, V]):
    def __init__(self, load_fn: Callable[[Sequence[K]], Awaitable[Sequence[Any]]]) -> None:
        self.load_fn = load_fn
        self._answers: dict[K, V] = {}
        # A failed key's error with the traceback it had, so that every raise starts from it
        # (a re-raised exception object grows its traceback with each caller).
        self._failures: dict[K, tuple[BaseException, TracebackType | None]] = {}
        self._pending: dict[K, _Batch[K]] = {}  # keys asked for whose batch has not answered
        self._batch: _Batch[K] | None = None

    def load(self, key: K) -> Awaitable[V]:
        return self._call([key], one=True)

    def load_many(self, keys: Iterable[K]) -> Awaitable[list[V]]:
        return self._call(list(keys), one=False)

    def _call(self, keys: list[K], one: bool) -> asyncio.Future[Any]:
        """The call's future; its keys not yet asked for join the open batch now."""
        future = asyncio.get_running_loop().create_future()
        waiter = _Waiter(future, keys, one)
        batches: list[_Batch[K]] = []
        for key in keys:
            if key in self._answers or key in self._failures:
                continue
            batch = self._pending.get(key)
            if batch is None:
                batch = self._pending[key] = self._open_batch()
                batch.keys.append(key)
            if batch not in batches:  # a call's keys lie in one batch or very few
                batches.append(batch)
                batch.waiters.append(waiter)
        waiter.batches = len(batches)
        if not batches:
            self._deliver(waiter, answered_now=True)
        return future

    def _open_batch(self) -> _Batch[K]:
        batch = self._batch
        if batch is None or batch.closed:
            batch = self._batch = _Batch()
            # As strawberry's: the batch is scheduled now, its task created on the next turn,
            # and it closes when that task starts; keys asked until then join it.
            asyncio.get_running_loop().call_soon(self._start, batch)
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
                raise  # cancelled (the loop is closing): its callers are told, then it stops
            return
        self._settle(batch, values)

    def _settle(self, batch: _Batch[K], values: list[Any]) -> None:
        for key, value in zip(batch.keys, values, strict=True):
            del self._pending[key]
            if isinstance(value, BaseException):
                self._failures[key] = (value, value.__traceback__)
            else:
                self._answers[key] = value
        for waiter in batch.waiters:
            waiter.batches -= 1
            if not waiter.batches:
                self._deliver(waiter, answered_now=False)

    def _deliver(self, waiter: _Waiter, answered_now: bool) -> None:
        """Answers the call as many turns of the loop later as the loader before this one
        did (strawberry's DataLoader, each call shielded): `load` of a known key at once,
        of a pending one a turn after its batch; `load_many` two turns after (gather, then
        the shield). Which keys meet in a batch depends on these turns, so the SQL a query
        sends stays what it was."""
        if waiter.one and answered_now:
            self._answer(waiter)
        elif waiter.one:
            asyncio.get_running_loop().call_soon(self._answer, waiter)
        else:
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._answer, waiter)

    def _answer(self, waiter: _Waiter) -> None:
        """The call's answers, or the first failure among its keys in their order."""
        future = waiter.future
        if future.done():
            return  # the caller was cancelled
        failures = self._failures
        if failures:
            for key in waiter.keys:
                failed = failures.get(key)
                if failed is not None:
                    error, traceback = failed
                    if isinstance(error, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(error.with_traceback(traceback))
                    return
        answers = self._answers
        if waiter.one:
            future.set_result(answers[waiter.keys[0]])
        else:
            future.set_result([answers[key] for key in waiter.keys])
