"""The fields at the root of an operation, through its fragments: what the per-request
checks that look at root fields (one sign-in per request, an enrollment-only session's
allowed fields) read, before anything runs."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionSetNode,
)


def fragments_of(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def root_fields(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    seen: set[str] | None = None,
) -> Iterator[FieldNode]:
    """Every field node at the root of `selection_set`, inline fragments and fragment spreads
    followed (each named fragment once: a cycle, which validation refuses, cannot loop)."""
    seen = set() if seen is None else seen
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from root_fields(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
            seen.add(selection.name.value)
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                yield from root_fields(fragment.selection_set, fragments, seen)
