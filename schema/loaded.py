"""Fields whose value is one DataLoader's answer for one attribute of their object.

`metadata=loaded_by("contacts_by_account")` on a field whose resolver is exactly
`return await info.context.loaders.contacts_by_account.load(self.id)` lets the compiled
executor (compiled/) load a whole level with one `load_many` instead of calling the resolver
once per object. The resolver stays the field's meaning: the stock executor runs it, and
tests/test_compiled_execution.py proves both paths answer the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LOADED_BY = "portico.loaded_by"


@dataclass(frozen=True)
class LoadedBy:
    loader: str  # the attribute of the request's Loaders
    key: str  # the attribute of the object whose value is the loader's key


def loaded_by(loader: str, key: str = "id") -> dict[str, Any]:
    """Field metadata saying the field is `loaders.<loader>.load(self.<key>)`."""
    return {LOADED_BY: LoadedBy(loader, key)}
