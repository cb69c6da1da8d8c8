"""A mutation's payload is resolved after its writes, so whatever would fail there is refused
before the resolver runs: a paging argument out of range, a cursor of no list, a field the
viewer may not read. Without this, `createAccount { account { documents(first: -1) } }`
created the account and answered `account: null`, and the retry made a second one.

`mutation(...)` is `strawberry.mutation` with this check; every mutation with a payload uses
it. The walk visits each fragment once per type it is spread into, so a document of chained
fragments costs no more than its size.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import strawberry
from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLIncludeDirective,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSkipDirective,
    InlineFragmentNode,
    NamedTypeNode,
    SelectionSetNode,
    get_named_type,
    is_abstract_type,
)
from graphql.execution.values import get_argument_values, get_directive_values
from graphql.utilities import type_from_ast
from strawberry.extensions import FieldExtension
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types import Info

from schema.mail import MAX_HISTORY_IMPORTS
from schema.pagination import (
    AUDIT_ENTRIES,
    CONTACT_ACCOUNTS,
    DELIVERIES,
    DOCUMENTS,
    INVITATIONS,
    argument_check,
    bad_input,
    check_page_size,
)
from schema.webhooks import WEBHOOK_DELIVERIES
from services.mail import message_pages
from services.shared.errors import InputError

ArgumentCheck = Callable[[Info, dict[str, Any]], None]


def _message_page(info: Info, arguments: dict[str, Any]) -> None:
    if arguments.get("first") is not None:
        check_page_size(arguments["first"], info.context.settings.max_page_size)
    if arguments.get("after") is not None:
        try:
            message_pages.decode_cursor(arguments["after"])
        except InputError as exc:  # as Account.messages says it
            raise bad_input(str(exc), "after") from None


def _history_page(info: Info, arguments: dict[str, Any]) -> None:
    check_page_size(arguments["first"], MAX_HISTORY_IMPORTS)


# The checks the fields' resolvers make of their arguments before reading anything. A field
# whose arguments are only enums needs none (GraphQL validates those); tests/
# test_write_atomicity.py fails for any other field with arguments missing here.
ARGUMENT_CHECKS: dict[tuple[str, str], ArgumentCheck] = {
    ("Account", "documents"): argument_check(DOCUMENTS),
    ("Account", "deliveries"): argument_check(DELIVERIES),
    ("Account", "auditEntriesPage"): argument_check(AUDIT_ENTRIES),
    ("Account", "invitationsPage"): argument_check(INVITATIONS),
    ("Contact", "accountsPage"): argument_check(CONTACT_ACCOUNTS),
    ("Account", "messages"): _message_page,
    ("Mailbox", "historyImports"): _history_page,
    ("WebhookEndpoint", "deliveries"): argument_check(WEBHOOK_DELIVERIES),
}


async def check_selection(info: Info) -> None:
    """Raises what the payload's fields would raise for their arguments or permissions."""
    raw: GraphQLResolveInfo = info._raw_info
    walk = _Walk(raw)
    returned = get_named_type(raw.return_type)
    for node in raw.field_nodes:
        if node.selection_set is not None:
            for parent, field, field_node in walk.fields(returned, node.selection_set):
                await _check_permissions(info, field)
                check = ARGUMENT_CHECKS.get((parent.name, field_node.name.value))
                if check is not None:
                    check(info, get_argument_values(field, field_node, raw.variable_values))


async def _check_permissions(info: Info, field: GraphQLField) -> None:
    definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    for permission_class in getattr(definition, "permission_classes", ()):
        permission = permission_class()
        allowed = permission.has_permission(None, info)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if not allowed:
            permission.on_unauthorized()


class _Walk:
    """The fields a selection set selects, type by type, as execution would reach them."""

    def __init__(self, raw: GraphQLResolveInfo) -> None:
        self.raw = raw
        self.seen: set[tuple[str, str]] = set()  # (fragment, type) pairs walked already

    def fields(
        self, parent: GraphQLNamedType, selection_set: SelectionSetNode
    ) -> Iterator[tuple[GraphQLNamedType, GraphQLField, FieldNode]]:
        for selection in selection_set.selections:
            if not self._included(selection):
                continue
            if isinstance(selection, FieldNode):
                yield from self._field(parent, selection)
            elif isinstance(selection, InlineFragmentNode):
                target = self._narrowed(parent, selection.type_condition)
                if target is not None:
                    yield from self.fields(target, selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.raw.fragments.get(selection.name.value)
                key = (selection.name.value, parent.name)
                if fragment is None or key in self.seen:
                    continue
                self.seen.add(key)
                target = self._narrowed(parent, fragment.type_condition)
                if target is not None:
                    yield from self.fields(target, fragment.selection_set)

    def _field(
        self, parent: GraphQLNamedType, node: FieldNode
    ) -> Iterator[tuple[GraphQLNamedType, GraphQLField, FieldNode]]:
        if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return  # a union selects only __typename itself
        field = parent.fields.get(node.name.value)
        if field is None:
            return  # __typename
        yield parent, field, node
        if node.selection_set is not None:
            yield from self.fields(get_named_type(field.type), node.selection_set)

    def _narrowed(
        self, parent: GraphQLNamedType, condition: NamedTypeNode | None
    ) -> GraphQLNamedType | None:
        """The type a fragment's fields are read on; None when it can never apply."""
        if condition is None:
            return parent
        target = type_from_ast(self.raw.schema, condition)
        if target is None or target is parent:
            return parent
        if isinstance(parent, GraphQLObjectType):  # the runtime type is known already
            if is_abstract_type(target) and self.raw.schema.is_sub_type(target, parent):
                return parent
            return None
        return target

    def _included(self, node: FieldNode | FragmentSpreadNode | InlineFragmentNode) -> bool:
        variables = self.raw.variable_values
        skip = get_directive_values(GraphQLSkipDirective, node, variables)
        include = get_directive_values(GraphQLIncludeDirective, node, variables)
        return not (skip and skip["if"]) and not (include and not include["if"])


class ChecksSelection(FieldExtension):
    """Runs `check_selection` after the field's permissions and before its resolver."""

    async def resolve_async(
        self, next_: Callable[..., Awaitable[Any]], source: Any, info: Info, **kwargs: Any
    ) -> Any:
        await check_selection(info)
        return await next_(source, info, **kwargs)


def mutation(**options: Any) -> Any:
    """`strawberry.mutation(...)` whose payload selection is checked before anything runs."""
    return strawberry.mutation(extensions=[ChecksSelection()], **options)
