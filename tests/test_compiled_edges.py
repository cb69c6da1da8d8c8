"""The compiled path's edges on a small schema of its own: values only the stock executor
handles (errors and awaitables where data belongs), a permission that reads the object,
a cancelled request, and errors that do not carry the abandoned plan with them."""

from __future__ import annotations

import asyncio
from typing import Any

import strawberry
from strawberry.types import Info

from compiled import Plans, executor_class
from compiled import executor as executor_module
from compiled.run import Fallback
from schema.batched import batched_field
from schema.permissions import ViewerPermission

CANCELLED: list[str] = []


class NamedOnly(ViewerPermission):
    """Breaks the ViewerPermission rule on purpose: it reads the object."""

    message = "Not this one."

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return getattr(source, "name", "") != "secret"  # lenient: None would pass


async def doubled(context: Any, items: list[Item]) -> list[int | None]:
    return [len(item.name) * 2 for item in items]


@strawberry.type
class Item:
    name: str
    size: int | None = batched_field(doubled, permission_classes=[NamedOnly])


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Tag(Named):  # an interface's type: strawberry checks every object's class
    pass


@strawberry.type
class Label(Named):
    pass


@strawberry.type
class Query:
    @strawberry.field
    def broken(self) -> Item | None:
        return ValueError("boom")  # type: ignore[return-value]  # a value, not raised

    @strawberry.field
    def tags(self, cast: bool) -> list[Tag | None]:
        if cast:
            return [Tag(name="plain"), strawberry.cast(Label, Tag(name="cast to another type"))]
        return [Tag(name="plain"), Item(name="another class")]  # type: ignore[list-item]

    @strawberry.field
    def items(self) -> list[Item]:
        return [Item(name="open"), Item(name="secret")]

    @strawberry.field
    async def slow(self, name: str) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            CANCELLED.append(name)
            raise
        return name


def schemas() -> tuple[strawberry.Schema, strawberry.Schema, Plans]:
    plans = Plans()
    compiled = strawberry.Schema(
        query=Query, types=[Label], execution_context_class=executor_class(plans)
    )
    return compiled, strawberry.Schema(query=Query, types=[Label]), plans


async def both(query: str) -> tuple[Any, Any, Plans]:
    compiled, stock, plans = schemas()
    ours, theirs = await compiled.execute(query), await stock.execute(query)
    return ours, theirs, plans


def shown(result: Any) -> tuple[Any, list[tuple[str, Any]]]:
    return result.data, [(e.message, e.path) for e in result.errors or ()]


async def test_an_error_given_as_an_object_value_is_the_stock_executors_to_answer() -> None:
    ours, theirs, plans = await both("{ broken { __typename } }")
    assert shown(ours) == shown(theirs)
    assert ours.data == {"broken": None} and ours.errors
    assert plans.stats().fell_back == 1


async def test_an_object_of_another_class_or_cast_away_is_the_stock_executors_to_answer() -> None:
    for cast, got in (("false", "Item"), ("true", "Tag")):
        ours, theirs, plans = await both(f"{{ tags(cast: {cast}) {{ name }} }}")
        assert shown(ours) == shown(theirs)
        assert ours.data == {"tags": [{"name": "plain"}, None]}
        assert [e.message for e in ours.errors] == [
            f"Expected value of type 'Tag' but got: <{got} instance>."
        ]
        assert plans.stats().fell_back == 1


async def test_a_permission_that_reads_the_object_is_checked_per_object_by_the_stock_executor() -> (
    None
):
    ours, theirs, plans = await both("{ items { name size } }")
    assert shown(ours) == shown(theirs)
    assert ours.data == {"items": [{"name": "open", "size": 8}, {"name": "secret", "size": None}]}
    assert [e.message for e in ours.errors] == ["Not this one."]
    assert plans.stats().fell_back == 1


async def test_a_cancelled_request_stops_the_plans_work() -> None:
    compiled, _, plans = schemas()
    CANCELLED.clear()
    request = asyncio.ensure_future(compiled.execute('{ a: slow(name: "a") b: slow(name: "b") }'))
    await asyncio.sleep(0.05)
    request.cancel()
    done, _ = await asyncio.wait([request], timeout=5)
    assert done and request.cancelled()
    assert sorted(CANCELLED) == ["a", "b"]  # both resolvers stopped, not left running
    assert plans.stats().compiled == plans.stats().fell_back == 0


async def test_a_fallbacks_errors_do_not_carry_the_abandoned_plan() -> None:
    ours, _, plans = await both("{ broken { name } }")
    assert plans.stats().fell_back == 1
    for error in ours.errors:
        chain, seen = error.original_error, 0
        while chain is not None and seen < 10:
            assert not isinstance(chain, Fallback)
            chain, seen = chain.__context__, seen + 1


async def test_the_shadow_check_records_a_difference_that_holds_and_forgives_a_race(
    monkeypatch: Any,
) -> None:
    """The suite's differential check (tests/conftest.py): a plan that answers wrongly is
    recorded; one wrong answer followed by a right one (another task wrote between the two
    runs) is not."""
    real = executor_module.run_plan
    wrong_answers: list[int] = []

    async def tampered(plan: Any, context: Any) -> Any:
        data = await real(plan, context)
        if wrong_answers and data is not None:
            wrong_answers.pop()
            data["items"][0]["name"] = "changed"
        return data

    monkeypatch.setattr(executor_module, "run_plan", tampered)
    compiled, _, _ = schemas()
    query = "{ items { name } }"
    try:
        wrong_answers[:] = [1]  # the first run only: a race
        await compiled.execute(query)
        assert executor_module.MISMATCHES == []
        wrong_answers[:] = [1, 1]  # both runs: a bug
        await compiled.execute(query)
        [mismatch] = executor_module.MISMATCHES
        assert "changed" in mismatch.compiled and "changed" not in mismatch.stock
    finally:
        executor_module.MISMATCHES.clear()
