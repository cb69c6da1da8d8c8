"""Runs a plan a level at a time: each selection gets its values for all the objects of a
level in one step (an attribute read, one `load_many`, or the resolvers called together),
then completes them in one loop.

Anything the stock executor would answer with an error (an exception, a null where the
type forbids one, a value of the wrong type) raises Fallback: reads have no side effects,
so the stock executor then runs the whole operation and gives the exact errors and nulls.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Mapping
from types import GeneratorType
from typing import Any

from graphql import GraphQLResolveInfo, Undefined
from graphql.execution import Executor
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path
from strawberry.relay import GlobalID
from strawberry.types import Info
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE as CAST

from compiled.plan import Completion, Kind, Leaf, Listed, Selection, Shape


class Fallback(Exception):
    """The plan met something only the stock executor answers exactly."""


async def run_plan(plan: Shape, executor: Executor) -> dict[str, Any]:
    """The operation's data, as the stock executor would build it for an error-free run."""
    return (await _Run(executor).objects(plan, [executor.root_value]))[0]


class _Run:
    __slots__ = ("context", "executor")

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.context = executor.context_value

    async def objects(self, shape: Shape, sources: list[Any]) -> list[dict[str, Any]]:
        """One answer object per source, its keys in the selection's order."""
        # Every selection's loads start before any is awaited, so sibling fields can share
        # DataLoader batches (the SQL may be batched otherwise than under the stock executor;
        # the answers are the same).
        started: list[Any] = []
        try:
            for selection in shape.selections:
                started.append(self.values(selection, sources))
            columns = [await _value(values) for values in started]
        except asyncio.CancelledError:
            _cancel(started)  # the request is gone: stop its work, as stock does
            raise
        except BaseException:
            await _settled_quietly(started)
            raise
        try:
            for i, selection in enumerate(shape.selections):
                if selection.completion is not None:
                    columns[i] = self.complete(selection.completion, columns[i])
        except BaseException:
            _close(columns)  # nested completions made before a refusal never run
            raise
        nested = [i for i, column in enumerate(columns) if isinstance(column, Awaitable)]
        if nested:
            for i, column in zip(nested, await _settled([columns[i] for i in nested]), strict=True):
                columns[i] = column
        if len(columns) == 1:  # the common case, built without zipping rows
            [key], [column] = [selection.key for selection in shape.selections], columns
            if len(column) != len(sources):
                raise Fallback  # a batch that answered for other objects than it was asked
            return [{key: value} for value in column]
        if not columns:
            return [{} for _ in sources]
        keys = [selection.key for selection in shape.selections]
        return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]

    def values(self, selection: Selection, sources: list[Any]) -> list[Any] | Awaitable[Any]:
        """The selection's raw values for the sources, or a started future of them."""
        kind = selection.kind
        if kind is Kind.ATTRIBUTE:
            name = selection.attribute
            return [getattr(source, name) for source in sources]
        if kind is Kind.TYPENAME:
            return [selection.parent_type.name] * len(sources)
        if kind is Kind.NODE_ID:
            return _global_ids(selection, sources)
        if not sources:
            return []
        if kind is Kind.BATCHED:
            return self.batched(selection, sources)
        return self.resolved(selection, sources)

    def batched(self, selection: Selection, sources: list[Any]) -> Awaitable[Any]:
        """The field's values for every source from one call, its permissions (decided by
        the viewer alone) checked once."""
        info = Info(_raw_info=self.info(selection), _field=selection.strawberry_field)
        for permission in selection.permissions:
            allowed = permission.has_permission(NO_OBJECT, info)
            if allowed is not True:
                _close([allowed])  # an async check: only the stock executor awaits it
                raise Fallback
        assert selection.batch is not None
        # Started now (a coroutine would wait until awaited), so siblings share batches.
        return asyncio.ensure_future(selection.batch(self.context, sources))

    def resolved(self, selection: Selection, sources: list[Any]) -> list[Any] | Awaitable[Any]:
        """The field's resolver for each object, called as the stock executor calls it."""
        executor, field_def = self.executor, selection.field_def
        assert field_def is not None
        node = selection.details[0].node
        arguments = (
            get_argument_values(
                field_def, node, executor.variable_values, None, executor.hide_suggestions
            )
            if field_def.args or node.arguments
            else {}
        )
        resolve = field_def.resolve or executor.field_resolver
        info = self.info(selection)
        results: list[Any] = []
        try:
            for source in sources:
                results.append(resolve(source, info, **arguments))
        except BaseException:
            _close(results)
            raise
        if any(isinstance(result, Awaitable) for result in results):
            return asyncio.ensure_future(_settled([_value(result) for result in results]))
        return results

    def info(self, selection: Selection) -> GraphQLResolveInfo:
        """Resolve info for the level; its path is the field's key alone (nothing in
        Portico reads paths, and errors are the stock executor's to report)."""
        assert selection.field_def is not None
        return self.executor.build_resolve_info(
            selection.field_def,
            [d.node for d in selection.details],
            selection.parent_type,
            Path(None, selection.key, selection.parent_type.name),
        )

    def complete(
        self, completion: Completion, values: list[Any]
    ) -> list[Any] | Awaitable[list[Any]]:
        if type(completion) is Leaf:
            return _leaves(completion, values)
        if type(completion) is Listed:
            return self.lists(completion, values)
        assert isinstance(completion, Shape)
        return self.shapes(completion, values)

    def lists(self, completion: Listed, values: list[Any]) -> list[Any] | Awaitable[list[Any]]:
        flat: list[Any] = []
        sizes: list[int] = []
        for value in values:
            if value is None or value is Undefined:
                if not completion.nullable:
                    raise Fallback
                sizes.append(-1)
                continue
            if type(value) is not list:  # the common case needs none of these checks
                if isinstance(value, (str, bytes, Mapping)) or _unfinished(value):
                    raise Fallback
                if not hasattr(value, "__iter__"):
                    raise Fallback
            before = len(flat)
            flat.extend(value)
            sizes.append(len(flat) - before)
        items = self.complete(completion.item, flat)
        if isinstance(items, Awaitable):
            return _regrouped_later(items, sizes)
        return _regrouped(items, sizes)

    async def shapes(self, shape: Shape, values: list[Any]) -> list[Any]:
        present, is_type_of, origin = [], shape.is_type_of, shape.origin
        for value in values:
            if value is None or value is Undefined:
                if not shape.nullable:
                    raise Fallback
                continue
            if _unfinished(value):
                raise Fallback
            if (
                is_type_of is not None
                and not (value.__class__ is origin and getattr(value, CAST, None) is None)
                and is_type_of(value, None) is not True
            ):
                raise Fallback
            present.append(value)
        answers = iter(await self.objects(shape, present))
        return [None if v is None or v is Undefined else next(answers) for v in values]


def _global_ids(selection: Selection, sources: list[Any]) -> list[GlobalID]:
    """What strawberry's Relay `id` resolver gives for objects of a class that names
    itself and its id the stock way (the planner checked the class)."""
    name, attribute, node_class = (
        selection.parent_type.name,
        selection.attribute,
        selection.node_class,
    )
    ids = []
    for source in sources:
        if type(source) is not node_class:
            raise Fallback
        value = getattr(source, attribute)
        if value is None:
            raise Fallback
        ids.append(GlobalID(type_name=name, node_id=str(value)))
    return ids


def _leaves(leaf: Leaf, values: list[Any]) -> list[Any]:
    coerce, unchanged, out = leaf.coerce, leaf.unchanged, []
    for value in values:
        if value.__class__ in unchanged:  # a plain str or bool: coerce would return it
            out.append(value)
            continue
        if value is None or value is Undefined:
            if not leaf.nullable:
                raise Fallback
            out.append(None)
            continue
        if value.__class__ not in _PLAIN and _unfinished(value):
            raise Fallback
        coerced = coerce(value)
        if coerced is None or coerced is Undefined:
            raise Fallback
        out.append(coerced)
    return out


def _regrouped(items: list[Any], sizes: list[int]) -> list[Any]:
    out: list[Any] = []
    at = 0
    for size in sizes:
        if size < 0:
            out.append(None)
        else:
            out.append(items[at : at + size])
            at += size
    return out


async def _regrouped_later(items: Awaitable[list[Any]], sizes: list[int]) -> list[Any]:
    return _regrouped(await items, sizes)


# Leaf values that are plainly data (the common case): neither an error nor an awaitable.
_PLAIN = frozenset({str, int, bool, float})


class _NoObject:
    """What a ViewerPermission gets as `source` when checked once for a level: reading it
    fails, so a permission that looked at the object would fall back to the stock
    executor (which passes each object) instead of deciding on nothing."""

    def __getattr__(self, name: str) -> Any:
        raise Fallback

    def __bool__(self) -> bool:
        raise Fallback


NO_OBJECT = _NoObject()


def _unfinished(value: Any) -> bool:
    """An error or an awaitable where a value belongs: the stock executor raises or awaits
    it, so only it answers exactly."""
    cls = value.__class__
    if cls in _SETTLED:
        return False
    if isinstance(value, Exception) or inspect.isawaitable(value):
        return True
    if not issubclass(cls, GeneratorType):  # a generator's awaitability is per object
        _SETTLED.add(cls)
    return False


# Classes seen whose objects are never an error nor awaitable (both are decided by the
# class, but for generators): inspect.isawaitable's ABC check costs more than the rest of
# an object's completion.
_SETTLED: set[type] = set()


def _close(values: list[Any]) -> None:
    """Closes coroutines made but never to be awaited (no 'never awaited' warning)."""
    for value in values:
        if inspect.iscoroutine(value):
            value.close()


def _cancel(started: list[Any]) -> None:
    """Cancels this run's own started work; shielded loader results stay for others."""
    for value in started:
        if isinstance(value, asyncio.Future):
            value.cancel()
        elif inspect.iscoroutine(value):
            value.close()


async def _value(value: Any) -> Any:
    return await value if isinstance(value, Awaitable) else value


async def _settled_quietly(started: list[Any]) -> None:
    """Lets loads already started finish before a Fallback (no task left running, no
    failure left unretrieved)."""
    waiting = [value for value in started if isinstance(value, Awaitable)]
    if waiting:
        await asyncio.gather(*waiting, return_exceptions=True)


async def _settled(awaitables: list[Awaitable[Any]]) -> list[Any]:
    """Every awaitable's result once all have finished (none is left running on a
    failure); any failure is a Fallback."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            raise Fallback from result
    return results
