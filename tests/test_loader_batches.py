"""Portico's request loader (resolvers/batch_loader.py) replaces strawberry's DataLoader for
its cost per key: the batches (so the SQL), the answers and the failures must be
strawberry's own. Each case runs the same calls on both and compares."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from strawberry.dataloader import DataLoader, WrongNumberOfResultsReturned

from resolvers.batch_loader import Loader

Calls = list[list[int]]
LoadFn = Callable[[Sequence[int]], Awaitable[Any]]


def counted(fail_on: int | None = None, short: bool = False) -> tuple[Calls, LoadFn]:
    calls: Calls = []

    async def load(keys: Sequence[int]) -> list[Any]:
        calls.append(list(keys))
        await asyncio.sleep(0)
        if fail_on in keys:
            raise ValueError(f"no row {fail_on}")
        answers: list[Any] = [key * 10 for key in keys]
        if 7 in keys:  # a key answered with an error of its own
            answers[list(keys).index(7)] = LookupError("seven")
        return answers[1:] if short else answers

    return calls, load


async def settle(awaitable: Awaitable[Any]) -> Any:
    try:
        return await awaitable
    except Exception as error:
        return f"{type(error).__name__}: {error}"


async def scenario(loader: Any) -> list[Any]:
    """Keys repeated within one call, shared with single loads asked in the same turn and
    one turn later (the batch is still open then), then a later batch whose keys
    are partly answered, a key answered with an error, and a failed batch."""
    first = loader.load_many([1, 2, 1])
    single = loader.load(2)
    await asyncio.sleep(0)
    late = loader.load(3)
    answers = [await settle(first), await settle(single), await settle(late)]
    answers.append(await settle(loader.load_many([2, 4, 7])))
    answers.append(await settle(loader.load(7)))
    answers.append(await settle(loader.load_many([5, 99])))
    answers.append(await settle(loader.load(99)))
    return answers


async def test_batches_answers_and_failures_are_strawberrys() -> None:
    ours_calls, ours_fn = counted(fail_on=99)
    stock_calls, stock_fn = counted(fail_on=99)
    ours = await scenario(Loader(ours_fn))
    stock = await scenario(DataLoader(stock_fn))
    assert ours == stock
    assert ours[:3] == [[10, 20, 10], 20, 30]
    assert ours[3:] == ["LookupError: seven"] * 2 + ["ValueError: no row 99"] * 2
    assert ours_calls == stock_calls == [[1, 2, 3], [4, 7], [5, 99]]


async def test_a_wrong_number_of_answers_fails_the_batch() -> None:
    _, load = counted(short=True)
    with pytest.raises(WrongNumberOfResultsReturned):
        await Loader(load).load_many([1, 2])


async def test_no_failure_is_left_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    logged: list[dict[str, Any]] = []
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: logged.append(context))
    try:
        _, load = counted(fail_on=2)
        loader = Loader(load)
        for awaitable in (loader.load_many([1, 2]), loader.load(2)):
            with pytest.raises(ValueError, match="no row 2"):
                await awaitable
        del loader, awaitable
        gc.collect()  # an unretrieved failure is logged when its future is collected
    finally:
        loop.set_exception_handler(handler)
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
