"""Fields computed for a whole level of objects at once.

`batched_field(values_of, ...)`: `values_of(context, objects)` gives the field's value for
each object, in order. The field's resolver calls it with its one object, and says so in
the field's metadata: the compiled executor (compiled/) calls it once with every object of
a level instead of calling the resolver once per object. One declaration gives both, so
they cannot disagree; the field's type is its annotation.

`loaded_field(loader, ...)`: the common case, the value being one DataLoader's answer for
an attribute of the object (`loaders.<loader>.load(self.<key>)`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import strawberry
from strawberry.types import Info

BATCH = "portico.batch"

Batch = Callable[[Any, Sequence[Any]], Awaitable[Sequence[Any]]]  # (context, objects)


def batched_field(values_of: Batch, **options: Any) -> Any:
    """A field whose values come from `values_of(context, objects)`; `options` are
    strawberry.field's (description, permission_classes...)."""

    async def resolve(self: Any, info: Info):  # type: ignore[no-untyped-def]  # the annotation's type
        return (await values_of(info.context, [self]))[0]

    return strawberry.field(resolver=resolve, metadata={BATCH: values_of}, **options)


def loaded_field(loader: str, key: str = "id", **options: Any) -> Any:
    """A field resolved as `loaders.<loader>.load(self.<key>)`."""

    def values_of(context: Any, objects: Sequence[Any]) -> Awaitable[Sequence[Any]]:
        return getattr(context.loaders, loader).load_many([getattr(o, key) for o in objects])

    return batched_field(values_of, **options)
