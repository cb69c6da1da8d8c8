"""One rule for all text input: control characters are refused before anything runs."""

from __future__ import annotations

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension


class RefuseControlCharacters(SchemaExtension):
    """Placeholder: filled in by the input-hygiene work of issue 10."""

    def on_execute(self) -> Iterator[None]:
        yield
