"""A query's selection compiled once against the schema into a plan of shapes.

A Shape is one selection set on one object type: its response keys in answer order, each
knowing how to get its value for a whole level of objects at once and how to complete it
(a leaf's output coercion, a list, a nested Shape). Fields are collected by graphql-core's
own `collect_fields`/`collect_subfields`, so merging, fragments, aliases and @include/@skip
follow the stock executor exactly; a plan therefore depends on the values of the variables
that @include/@skip read, and is kept per those values (compiled/executor.py).

Whatever the plan does not cover raises Unsupported while compiling, and the stock executor
runs the document: abstract types (interfaces, unions), introspection, mutations and
subscriptions, middleware, fragment variables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from graphql import (
    GraphQLField,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    OperationType,
    is_abstract_type,
    is_leaf_type,
    is_object_type,
)
from graphql.execution import Executor
from graphql.execution.collect_fields import (
    FieldDetailsList,
    GroupedFieldSet,
    collect_fields,
    collect_subfields,
)
from graphql.type.scalars import serialize_boolean, serialize_id, serialize_string
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.relay import Node
from strawberry.types.field import StrawberryField

from schema.batched import BATCH, Batch
from schema.permissions import ViewerPermission

STRAWBERRY_DEFINITION = (
    "strawberry-definition"  # where strawberry keeps a type's or field's definition
)


class Unsupported(Exception):
    """The document holds something only the stock executor runs."""


class Kind(Enum):
    TYPENAME = "typename"  # the object type's name
    ATTRIBUTE = "attribute"  # a plain attribute of the object (strawberry's basic field)
    BATCHED = "batched"  # a batched field (schema/batched.py): one call for the level
    NODE_ID = "node_id"  # a Relay node's global id, from its id attribute
    RESOLVED = "resolved"  # the field's own resolver, called per object as stock does


@dataclass(slots=True)
class Leaf:
    coerce: Callable[[Any], Any]  # the type's output coercion, as the stock executor calls it
    nullable: bool
    unchanged: frozenset[type] = frozenset()  # classes `coerce` gives back as they are


# graphql-core's coercions that answer a value of these exact classes with the value itself.
_UNCHANGED: dict[Callable[[Any], Any], frozenset[type]] = {
    serialize_string: frozenset({str}),
    serialize_id: frozenset({str}),
    serialize_boolean: frozenset({bool}),
}


@dataclass(slots=True)
class Listed:
    item: Completion
    nullable: bool


@dataclass(slots=True)
class Shape:
    type: GraphQLObjectType
    selections: list[Selection]
    is_type_of: Callable[[Any, Any], Any] | None
    nullable: bool
    # The class whose objects (not cast by strawberry.cast) strawberry's own is_type_of
    # accepts without asking: it is an isinstance check then; None when it must be asked.
    origin: type | None = None


Completion = Leaf | Listed | Shape


@dataclass(slots=True)
class Selection:
    key: str  # the response key (alias or name)
    kind: Kind
    parent_type: GraphQLObjectType
    field_def: GraphQLField | None  # None only for __typename
    details: FieldDetailsList  # the field's nodes, for arguments and resolve info
    completion: Completion | None  # None only for __typename
    attribute: str = ""  # ATTRIBUTE: the object's attribute
    batch: Batch | None = None  # BATCHED: the values for a level's objects
    permissions: tuple[BasePermission, ...] = ()  # BATCHED: checked once per level
    strawberry_field: StrawberryField | None = None
    node_class: type | None = None  # NODE_ID: the only class its objects may have


def compile_query(executor: Executor) -> Shape:
    """The plan of the executor's operation, given its variables' values for @include and
    @skip; Unsupported when the stock executor must run it."""
    operation = executor.operation
    if operation.operation is not OperationType.QUERY or operation.directives:
        raise Unsupported("only plain queries")
    if executor.middleware_manager is not None and executor.middleware_manager.middlewares:
        raise Unsupported("middleware wraps resolvers")
    root = executor.schema.query_type
    assert root is not None  # a schema with queries
    collected = collect_fields(
        executor.schema,
        executor.fragments,
        executor.variable_values,
        root,
        operation,
        executor.hide_suggestions,
    )
    if collected.new_defer_usages:
        raise Unsupported("@defer")
    return Shape(root, _selections(executor, root, collected.grouped_field_set), None, False)


def _selections(
    executor: Executor, parent: GraphQLObjectType, grouped: GroupedFieldSet
) -> list[Selection]:
    selections = []
    for key, details in grouped.items():
        if any(d.fragment_variable_values is not None for d in details):
            raise Unsupported("fragment variables")
        name = details[0].node.name.value
        if name == "__typename":
            selections.append(Selection(key, Kind.TYPENAME, parent, None, details, None))
            continue
        if name.startswith("__"):
            raise Unsupported("introspection")
        field_def = executor.schema.get_field(parent, name)
        if field_def is None:
            continue  # as stock: a field the type lacks is left out of the answer
        completion = _completion(executor, field_def.type, details, nullable=True)
        selections.append(_selection(key, parent, field_def, details, completion))
    return selections


def _selection(
    key: str,
    parent: GraphQLObjectType,
    field_def: GraphQLField,
    details: FieldDetailsList,
    completion: Completion,
) -> Selection:
    field = field_def.extensions.get(STRAWBERRY_DEFINITION)
    if not isinstance(field, StrawberryField):
        return Selection(key, Kind.RESOLVED, parent, field_def, details, completion)
    # Strawberry's own test for a field that is only its attribute: no resolver, and no
    # extension (a permission among them) wrapping the read.
    if field.is_basic_field and field.default_resolver is getattr:
        return Selection(
            key, Kind.ATTRIBUTE, parent, field_def, details, completion, field.python_name
        )
    node_class = _plain_node_class(parent, field)
    if node_class is not None:
        return Selection(
            key,
            Kind.NODE_ID,
            parent,
            field_def,
            details,
            completion,
            node_class.resolve_id_attr(),
            node_class=node_class,
        )
    batch = field.metadata.get(BATCH)
    permissions = _viewer_permissions(field)
    if batch is not None and not field_def.args and permissions is not None:
        return Selection(
            key,
            Kind.BATCHED,
            parent,
            field_def,
            details,
            completion,
            batch=batch,
            permissions=permissions,
            strawberry_field=field,
        )
    return Selection(key, Kind.RESOLVED, parent, field_def, details, completion)


def _plain_node_class(parent: GraphQLObjectType, field: StrawberryField) -> type[Node] | None:
    """The parent's class when `field` is strawberry's Relay `id` and the class keeps the
    stock way of naming itself and its id (GlobalID of the type's name and the id attribute)."""
    resolver = field.base_resolver
    if resolver is None or field.extensions or field.arguments:
        return None
    if getattr(resolver.wrapped_func, "__func__", None) is not Node._id.__func__:  # type: ignore[attr-defined]
        return None
    definition = parent.extensions.get(STRAWBERRY_DEFINITION)
    origin = getattr(definition, "origin", None)
    if not (isinstance(origin, type) and issubclass(origin, Node)):
        return None
    plain = (
        origin.resolve_id.__func__ is Node.resolve_id.__func__  # type: ignore[attr-defined]
        and origin.resolve_typename.__func__ is Node.resolve_typename.__func__  # type: ignore[attr-defined]
    )
    return origin if plain else None


def _viewer_permissions(field: StrawberryField) -> tuple[BasePermission, ...] | None:
    """The field's permissions when they are all the field's extensions do and each is
    decided by the viewer alone (so once per level is enough); else None."""
    found: list[BasePermission] = []
    for extension in field.extensions:
        if not isinstance(extension, PermissionExtension) or extension.fail_silently:
            return None
        if not all(isinstance(p, ViewerPermission) for p in extension.permissions):
            return None
        found.extend(extension.permissions)
    return tuple(found)


def _completion(
    executor: Executor, type_: GraphQLOutputType, details: FieldDetailsList, nullable: bool
) -> Completion:
    if isinstance(type_, GraphQLNonNull):
        return _completion(executor, type_.of_type, details, nullable=False)
    if isinstance(type_, GraphQLList):
        return Listed(_completion(executor, type_.of_type, details, nullable=True), nullable)
    if is_leaf_type(type_):
        assert isinstance(type_, GraphQLLeafType)
        coerce = type_.coerce_output_value
        return Leaf(coerce, nullable, _UNCHANGED.get(coerce, frozenset()))
    if is_abstract_type(type_) or not is_object_type(type_):
        raise Unsupported("abstract types")
    assert isinstance(type_, GraphQLObjectType)
    sub = collect_subfields(
        executor.schema,
        executor.fragments,
        executor.variable_values,
        executor.operation,
        type_,
        details,
        executor.hide_suggestions,
    )
    if sub.new_defer_usages:
        raise Unsupported("@defer")
    selections = _selections(executor, type_, sub.grouped_field_set)
    return Shape(type_, selections, type_.is_type_of, nullable, _plain_origin(type_))


def _plain_origin(type_: GraphQLObjectType) -> type | None:
    """The type's class when its is_type_of is strawberry's generated one (no custom check,
    not a generic's specialization)."""
    definition = type_.extensions.get(STRAWBERRY_DEFINITION)
    if definition is None or definition.is_type_of is not None or definition.concrete_of:
        return None
    origin = definition.origin
    return origin if isinstance(origin, type) else None
