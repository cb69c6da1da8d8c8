"""The work budget: what a document would cost, measured before graphql-core validates or
runs it, without ever expanding its fragments one spread at a time.

Chained fragments that each spread the previous one twice double the work per level, in
graphql-core's execution and in strawberry's depth and alias limiters alike (both expand
every spread). Here each fragment is measured once and its spreads multiply, so measuring
is linear in the document's text however much it would expand.

Three measures, each with its own limit:
- selections: fields, fragment spreads and inline fragments once fragments are expanded,
  over the whole document: it bounds the work of validation as well as of execution;
- merge pairs: what graphql-core's field-merging rule would compare (schema/merging.py),
  quadratic in the copies of one field or the fragments spread side by side;
- result size: the values the executed operation could answer with. A field with a `first`
  argument is a page: the lists directly inside it (a connection's `edges`) hold `first`
  items; a list field with `first` (historyImports) holds that many; any other list is
  assumed to hold PLAIN_LIST_SIZE items.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SchemaMetaFieldDef,
    SelectionSetNode,
    TypeMetaFieldDef,
    TypeNameMetaFieldDef,
    VariableNode,
    get_named_type,
    get_nullable_type,
    validate,
)
from graphql.pyutils import Undefined
from graphql.utilities import get_operation_ast, value_from_ast_untyped
from graphql.validation import KnownFragmentNamesRule, NoFragmentCyclesRule

from schema.merging import WalkTooLong, estimate
from services.shared.errors import ErrorCode

# Lists without a page size (an account's contacts, a contact's emailAddresses): a guess
# large enough for ordinary records, small enough that a client's whole introspection
# (four nested lists) stays well under the default result budget.
PLAIN_LIST_SIZE = 10

# Weighted pairs the field-merging rule may compare: a few microseconds each, so the worst
# document under the token limit validates in about 20 ms. 50 fragments side by side,
# each selecting `id` and `__typename`, weigh about 3,800.
MAX_MERGE_PAIRS = 5000

PAGE_ARGUMENT = "first"

META_FIELDS = {
    "__typename": TypeNameMetaFieldDef,
    "__schema": SchemaMetaFieldDef,
    "__type": TypeMetaFieldDef,
}


@dataclass(frozen=True)
class Budget:
    max_fields: int
    max_result_size: int
    max_page_size: int  # a larger `first` is refused by the field itself: count it as this
    max_merge_pairs: int = MAX_MERGE_PAIRS


class BrokenSpreads(Exception):
    """A spread of an unknown fragment, or a fragment spreading itself. strawberry's depth
    limiter fails on the first (KeyError) and expands the second exponentially, so
    graphql-core's own rules for them answer alone."""


def refusal(
    budget: Budget,
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None,
    operation_name: str | None,
) -> list[GraphQLError]:
    """The errors that stop `document` before validation; none when it fits the budget."""
    errors, measurable = document_refusal(budget, schema, document)
    if errors or not measurable:
        return errors
    return size_refusal(budget, schema, document, variables, operation_name)


def document_refusal(
    budget: Budget, schema: GraphQLSchema, document: DocumentNode
) -> tuple[list[GraphQLError], bool]:
    """The part of the budget the document alone decides (selections, merge pairs), so it
    can be kept per document: its errors, and whether the result size may be measured
    (not when its spreads are broken)."""
    try:
        error = _over_document_budget(budget, document)
    except BrokenSpreads:
        return validate(schema, document, [KnownFragmentNamesRule, NoFragmentCyclesRule]), False
    except RecursionError:  # fragments nesting fields deeper than Python's stack
        error = _too_deep()
    return ([error] if error else []), True


def size_refusal(
    budget: Budget,
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None,
    operation_name: str | None,
) -> list[GraphQLError]:
    """The part that depends on the request: the chosen operation's result size, with the
    page sizes its variables give. Only for a document document_refusal let through."""
    try:
        error = _over_size(budget, schema, document, variables, operation_name)
    except RecursionError:
        error = _too_deep()
    return [error] if error else []


# What size_refusal reads of one variable, as a key: the int it holds, or only that it
# holds something else (the page size is then the argument's default) or nothing (then
# the variable's default applies).
NOT_AN_INT = "not an int"
ABSENT = "absent"


def page_variables(document: DocumentNode) -> tuple[str, ...]:
    """The variables given directly as a `first` argument: of all the variables, the only
    ones size_refusal reads (anything else in `first` is no int whatever they hold)."""
    names: set[str] = set()
    stack = [
        d.selection_set
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode | FragmentDefinitionNode)
    ]
    while stack:
        selection_set = stack.pop()
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                names.update(
                    a.value.name.value
                    for a in selection.arguments or ()
                    if a.name.value == PAGE_ARGUMENT and isinstance(a.value, VariableNode)
                )
            if not isinstance(selection, FragmentSpreadNode):
                stack.append(selection.selection_set)
    return tuple(sorted(names))


def page_key(names: tuple[str, ...], variables: Mapping[str, Any] | None) -> tuple[object, ...]:
    """What size_refusal reads of `variables` (the names from page_variables)."""
    given = variables or {}
    return tuple(
        value if _is_int(value) else NOT_AN_INT if name in given else ABSENT
        for name in names
        for value in (given.get(name),)
    )


def _too_deep() -> GraphQLError:
    return too_complex("The query nests its fields too deeply.")


def _over_document_budget(budget: Budget, document: DocumentNode) -> GraphQLError | None:
    fragments = _fragments(document)
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if _Selections(fragments).of_document(operations) > budget.max_fields:
        return too_complex(
            f"The query selects more than {budget.max_fields} fields once its fragments "
            "are expanded. Select fewer fields or spread fragments less often."
        )
    return _merging_refusal(budget, document)


def _over_size(
    budget: Budget,
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None,
    operation_name: str | None,
) -> GraphQLError | None:
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return None  # graphql-core says which operation is missing
    fragments = _fragments(document)
    size = _ResultSize(schema, fragments, budget.max_page_size, variables, operation).total()
    if size > budget.max_result_size:
        return too_complex(
            f"The query could answer with {_about(size)} values (page sizes multiplied "
            f"down nested lists), over the limit of {budget.max_result_size}. "
            "Ask for smaller pages or fewer nested lists."
        )
    return None


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def _merging_refusal(budget: Budget, document: DocumentNode) -> GraphQLError | None:
    # Operations walk at most max_fields selections (counted above); unused fragments
    # were not counted, so they get as many again.
    max_walk = 2 * budget.max_fields
    try:
        merged = estimate(document, max_walk)
    except WalkTooLong:
        return too_complex(
            f"The query's fragments, unused ones included, expand to more than {max_walk} "
            "selections. Send only the fragments the operation spreads."
        )
    if merged.pairs <= budget.max_merge_pairs:
        return None
    where = []
    if merged.occurrences > 1:
        where.append(
            f"one selection set selects '{merged.busiest}' {merged.occurrences} times, "
            "counting what its fragments bring"
        )
    if merged.fragments > 1:
        where.append(f"one brings {merged.fragments} distinct fragments together")
    return too_complex(
        "The query repeats fields too often: checking that they merge would compare about "
        f"{merged.pairs} pairs of fields and fragments, over the limit of "
        f"{budget.max_merge_pairs} ({'; '.join(where)}). Select each field once per "
        "selection set and spread fewer fragments side by side."
    )


def _about(size: int) -> str:
    return f"about {size}" if size < 10**9 else "over a billion"


def too_complex(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": ErrorCode.QUERY_TOO_COMPLEX})


@dataclass
class _Selections:
    """Selections after expansion, each fragment counted once (memoised)."""

    fragments: Mapping[str, FragmentDefinitionNode]
    memo: dict[str, int] = field(default_factory=dict)
    in_progress: set[str] = field(default_factory=set)

    def of_document(self, operations: Iterable[OperationDefinitionNode]) -> int:
        return sum(self.of_set(o.selection_set) for o in operations)

    def of_set(self, selection_set: SelectionSetNode | None) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            total += 1
            if isinstance(selection, FragmentSpreadNode):
                total += self.of_fragment(selection.name.value)
            elif isinstance(selection, FieldNode | InlineFragmentNode):
                total += self.of_set(selection.selection_set)
        return total

    def of_fragment(self, name: str) -> int:
        if name in self.memo:
            return self.memo[name]
        fragment = self.fragments.get(name)
        if fragment is None or name in self.in_progress:
            raise BrokenSpreads(name)
        self.in_progress.add(name)
        self.memo[name] = self.of_set(fragment.selection_set)
        self.in_progress.discard(name)
        return self.memo[name]


class _ResultSize:
    """Values one operation could answer with. Runs after _Selections found every spread
    known and no cycle."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        max_page_size: int,
        variables: Mapping[str, Any] | None,
        operation: OperationDefinitionNode,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.max_page_size = max_page_size
        self.operation = operation
        self.variables = {**_variable_defaults(operation), **(variables or {})}
        self.memo: dict[tuple[str, int | None], int] = {}

    def total(self) -> int:
        root = self.schema.get_root_type(self.operation.operation)
        return self.of_set(self.operation.selection_set, root, None)

    def of_set(
        self,
        selection_set: SelectionSetNode | None,
        parent: GraphQLNamedType | None,
        page: int | None,
    ) -> int:
        """`page`: the enclosing field's `first`, the length of the lists directly inside."""
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.of_field(selection, parent, page)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self.schema.get_type(condition.name.value) if condition else parent
                total += self.of_set(selection.selection_set, inner, page)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.of_fragment(selection.name.value, page)
        return total

    def of_fragment(self, name: str, page: int | None) -> int:
        key = (name, page)
        if key not in self.memo:
            fragment = self.fragments[name]
            condition = self.schema.get_type(fragment.type_condition.name.value)
            self.memo[key] = self.of_set(fragment.selection_set, condition, page)
        return self.memo[key]

    def of_field(self, node: FieldNode, parent: GraphQLNamedType | None, page: int | None) -> int:
        definition = _field_definition(parent, node.name.value)
        if definition is None:  # unknown: validation reports it; count it plainly
            return 1 + self.of_set(node.selection_set, None, None)
        first = self.page_size(node, definition)
        returns_list = isinstance(get_nullable_type(definition.type), GraphQLList)
        if returns_list:
            items = first if first is not None else page if page is not None else PLAIN_LIST_SIZE
            inner_page = None
        else:
            items, inner_page = 1, first
        named = get_named_type(definition.type)
        return items * (1 + self.of_set(node.selection_set, named, inner_page))

    def page_size(self, node: FieldNode, definition: GraphQLField) -> int | None:
        """The field's `first` as the resolver will see it (null means the default)."""
        argument = definition.args.get(PAGE_ARGUMENT)
        if argument is None:
            return None
        value: Any = Undefined
        for given in node.arguments or ():
            if given.name.value == PAGE_ARGUMENT:
                value = value_from_ast_untyped(given.value, self.variables)
        if not _is_int(value):
            value = argument.default_value if _is_int(argument.default_value) else None
        if value is None:
            return self.max_page_size
        return min(max(value, 0), self.max_page_size)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _variable_defaults(operation: OperationDefinitionNode) -> dict[str, Any]:
    return {
        d.variable.name.value: value_from_ast_untyped(d.default_value)
        for d in operation.variable_definitions or ()
        if d.default_value is not None
    }


def _field_definition(parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
    if name in META_FIELDS:
        return META_FIELDS[name]
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        return parent.fields.get(name)
    return None
