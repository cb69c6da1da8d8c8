"""Portico's Loader answers `load_many` without strawberry's per-key done callback
(resolvers/loaders.py): the batches, the answers and the failures must be strawberry's own.
Each case runs the same calls on a Loader and on a stock DataLoader and compares."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from strawberry.dataloader import DataLoader

from resolvers.loaders import Loader

Calls = list[list[int]]


def counted(fail_on: int | None = None) -> tuple[Calls, Callable[[Sequence[int]], Awaitable[Any]]]:
    calls: Calls = []

    async def load(keys: Sequence[int]) -> list[Any]:
        calls.append(list(keys))
        await asyncio.sleep(0)
        if fail_on in keys:
            raise ValueError(f"no row {fail_on}")
        return [key * 10 for key in keys]

    return calls, load


async def scenario(loader: DataLoader[int, Any]) -> list[Any]:
    """Keys repeated within one call, shared with a single load, then a later turn whose
    keys are partly cached."""
    first = loader.load_many([1, 2, 1])
    single = loader.load(2)
    answers = [await first, await single]
    answers.append(await loader.load_many([2, 3]))
    return answers


@pytest.mark.parametrize("max_batch_size", [None, 2])
async def test_load_many_batches_and_answers_as_stock(max_batch_size: int | None) -> None:
    ours_calls, ours_fn = counted()
    stock_calls, stock_fn = counted()
    ours = await scenario(Loader(ours_fn, max_batch_size=max_batch_size))
    stock = await scenario(DataLoader(stock_fn, max_batch_size=max_batch_size))
    assert ours == stock == [[10, 20, 10], 20, [20, 30]]
    assert ours_calls == stock_calls


async def test_a_failed_batch_fails_every_caller_as_stock() -> None:
    loop = asyncio.get_running_loop()
    logged: list[dict[str, Any]] = []
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: logged.append(context))
    try:
        outcomes = []
        for make in (Loader, DataLoader):
            _, load = counted(fail_on=2)
            loader = make(load)
            many = loader.load_many([1, 2])
            with pytest.raises(ValueError, match="no row 2"):
                await many
            outcomes.append(type(loader.cache_map.get(1).exception()))
            del loader, many
            gc.collect()  # an unretrieved failure is logged when its future is collected
    finally:
        loop.set_exception_handler(handler)
    assert outcomes == [ValueError, ValueError]
    assert logged == []


async def test_a_cancelled_caller_leaves_the_shared_keys_to_the_others() -> None:
    calls, load = counted()
    loader = Loader(load)
    gone = loader.load_many([1, 2])
    kept = loader.load_many([2])
    await asyncio.sleep(0)
    gone.cancel()  # the stock executor cancels a failed field's siblings
    assert await kept == [20]
    assert calls == [[1, 2]]
