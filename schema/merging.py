"""How long graphql-core's field-merging rule would compare, estimated before it runs.

OverlappingFieldsCanBeMerged compares, in every selection set, each pair of fields with
one response name (and, through them, their sub-selections), and each pair of distinct
fragments spread there. A small document can make that quadratic: 490 copies of
`viewer { __typename }` take most of a second, 300 fragments spread side by side a fifth
of one, 50 copies of a field holding 9 copies of another nearly a second.

The estimate merges the document as execution would: fields with one response name
merge their sub-selections into one level, and a level holds what its inline fragments
and fragments bring (a fragment reached twice in one level once, as graphql-core compares
a fragment with itself only once). Each level adds the pairs it holds: for each response
name with k occurrences k*(k-1)/2 pairs, each weighing one plus the average count of the
fields' argument values (comparing arguments is the dearest part), and a pair for each
two distinct fragments. The walk expands fragments, so it runs after the field budget
has bounded the expansion of the operations; fragments no operation spreads are walked
too (graphql-core validates them) under a bound of their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
)


@dataclass(frozen=True)
class Estimate:
    pairs: int  # weighted pairs graphql-core would compare
    busiest: str  # the response name with the most occurrences in one level
    occurrences: int
    fragments: int  # the most distinct fragments in one level
    walked: int  # selections walked, to bound the walk itself


class WalkTooLong(Exception):
    """The merged document is larger than the caller allows: too complex anyway."""


def estimate(document: DocumentNode, max_walk: int) -> Estimate:
    """Raises WalkTooLong once more than `max_walk` selections have been walked."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    walk = _Walk(fragments, max_walk)
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    for operation in operations:
        walk.level([operation.selection_set], set())
    # Fragments no operation reached: graphql-core validates them all the same.
    for name, fragment in fragments.items():
        if name not in walk.reached:
            walk.level([fragment.selection_set], {name})
    return Estimate(walk.pairs, walk.busiest, walk.occurrences, walk.fragments, walk.walked)


class _Walk:
    def __init__(self, fragments: Mapping[str, FragmentDefinitionNode], max_walk: int) -> None:
        self.definitions = fragments
        self.max_walk = max_walk
        self.reached: set[str] = set()
        self.pairs = 0
        self.busiest = ""
        self.occurrences = 0
        self.fragments = 0
        self.walked = 0

    def level(self, selection_sets: list[SelectionSetNode], spread: set[str]) -> None:
        """One merged level and, without recursion, every level below it. `spread`: the
        fragments already in the level (a fragment's own, when walking a definition)."""
        pending = [(selection_sets, spread)]
        while pending:
            sets, seen = pending.pop()
            fields: dict[str, list[FieldNode]] = {}
            for node in self.selections(sets, seen):
                fields.setdefault((node.alias or node.name).value, []).append(node)
            self.count(fields, len(seen))
            for same_name in fields.values():
                children = [f.selection_set for f in same_name if f.selection_set]
                if children:
                    pending.append((children, set()))

    def selections(self, sets: list[SelectionSetNode], seen: set[str]) -> Iterator[FieldNode]:
        """The fields of one level, through inline fragments and each fragment once."""
        pending = list(sets)
        while pending:
            for selection in pending.pop().selections:
                self.walked += 1
                if self.walked > self.max_walk:
                    raise WalkTooLong
                if isinstance(selection, FieldNode):
                    yield selection
                elif isinstance(selection, InlineFragmentNode):
                    pending.append(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = self.definitions.get(name)
                    if fragment is not None and name not in seen:  # unknown: graphql-core's
                        seen.add(name)
                        self.reached.add(name)
                        pending.append(fragment.selection_set)

    def count(self, fields: Mapping[str, list[FieldNode]], fragments: int) -> None:
        self.pairs += fragments * (fragments - 1) // 2
        self.fragments = max(self.fragments, fragments)
        for name, same_name in fields.items():
            k = len(same_name)
            if k > self.occurrences:
                self.busiest, self.occurrences = name, k
            if k > 1:
                values = sum(_argument_values(f) for f in same_name)
                self.pairs += k * (k - 1) // 2 * (1 + values // k)


def _argument_values(node: FieldNode) -> int:
    return sum(_values(argument.value) for argument in node.arguments or ())


def _values(value: ValueNode) -> int:
    if isinstance(value, ListValueNode):
        return 1 + sum(_values(v) for v in value.values)
    if isinstance(value, ObjectValueNode):
        return 1 + sum(_values(f.value) for f in value.fields)
    return 1
