"""Portico's request loader (resolvers/batch_loader.py) replaces strawberry's DataLoader for
its cost per key: the batches (so the SQL), the answers and the failures must be
strawberry's own. Each case runs the same calls on both and compares."""

from __future__ import annotations

import asyncio
import gc
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from strawberry.dataloader import DataLoader, WrongNumberOfResultsReturned

from resolvers.batch_loader import Loader

Calls = list[list[int]]


class Shielded(DataLoader[Any, Any]):
    """The loader Portico used before its own: strawberry's, each call shielded."""

    def load(self, key: Any) -> Awaitable[Any]:
        return asyncio.shield(super().load(key))

    def load_many(self, keys: Any) -> Awaitable[list[Any]]:
        return asyncio.shield(asyncio.gather(*[super(Shielded, self).load(k) for k in keys]))


LoadFn = Callable[[Sequence[int]], Awaitable[Any]]


def counted(
    fail_on: frozenset[int] | set[int] = frozenset(),
    short: bool = False,
    calls: Calls | None = None,
) -> tuple[Calls, LoadFn]:
    calls = [] if calls is None else calls

    async def load(keys: Sequence[int]) -> list[Any]:
        calls.append(list(keys))
        await asyncio.sleep(0)
        failing = sorted(set(keys) & fail_on)
        if failing:
            raise ValueError(f"no row {failing[0]}")
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
    ours_calls, ours_fn = counted(fail_on={99})
    stock_calls, stock_fn = counted(fail_on={99})
    ours = await scenario(Loader(ours_fn))
    stock = await scenario(Shielded(stock_fn))
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
        _, load = counted(fail_on={2, 4})
        loader = Loader(load)
        for awaitable in (loader.load_many([1, 2]), loader.load(2)):
            with pytest.raises(ValueError, match="no row 2"):
                await awaitable
        # Two callers of a key whose batch fails after one of them was cancelled (a sibling
        # of a failed field, cancelled by the stock executor).
        gone, kept = loader.load(4), loader.load(4)
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(ValueError, match="no row 4"):
            await kept
        del loader, awaitable, gone, kept
        await asyncio.sleep(0.01)  # whatever the cancelled call left finishes
        gc.collect()  # an unretrieved failure is logged when its future is collected
        await asyncio.sleep(0)
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


async def test_a_batch_meets_the_same_keys_whatever_the_turns_between_callers() -> None:
    # Which keys share a batch depends on how many turns of the loop a caller waits for its
    # answer; a sibling asking `turns` turns later meets, or misses, the same batch as before.
    async def batches(make: Callable[[LoadFn], Any], turns: int, many: bool) -> Calls:
        calls: Calls = []
        parents, children = make(counted()[1]), make(counted(calls=calls)[1])

        async def child_of_a_parent() -> Any:
            await (parents.load_many([1]) if many else parents.load(1))
            return await children.load(1)

        async def sibling() -> Any:
            for _ in range(turns):
                await asyncio.sleep(0)
            return await children.load(2)

        await asyncio.gather(child_of_a_parent(), sibling())
        return calls

    for many in (False, True):
        for turns in range(8):
            assert await batches(Loader, turns, many) == await batches(Shielded, turns, many)


async def test_every_caller_of_a_failed_key_gets_the_error_with_its_own_traceback() -> None:
    _, load = counted(fail_on={1})
    loader = Loader(load)
    depths = []
    for _ in range(20):
        try:
            await loader.load(1)
        except ValueError as error:
            depths.append(len(traceback.extract_tb(error.__traceback__)))
    assert len(set(depths)) == 1  # a traceback that grew with each caller would differ
