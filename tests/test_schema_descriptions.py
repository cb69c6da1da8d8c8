"""Every type, field, argument, enum value, input field and custom scalar of the schema has a
description (introspection types and GraphQL's own scalars aside): typed clients and GraphiQL
show them, so a missing one is a gap in the API's documentation."""

from __future__ import annotations

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    specified_scalar_types,
)

from portico.settings import Settings
from resolvers.root import build_schema


def undescribed(schema: GraphQLSchema) -> list[str]:
    """Each schema element without a description, named as `Type`, `Type.field`,
    `Type.field(argument)`, `Input.field` or `Enum.VALUE`."""
    missing: list[str] = []
    for name, named in sorted(schema.type_map.items()):
        if name.startswith("__") or name in specified_scalar_types:
            continue
        missing += _missing_in(name, named)
    return missing


def _missing_in(name: str, named: GraphQLNamedType) -> list[str]:
    missing = [] if (named.description or "").strip() else [name]
    if isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
        for field_name, field in named.fields.items():
            if not (field.description or "").strip():
                missing.append(f"{name}.{field_name}")
            missing += [
                f"{name}.{field_name}({arg})"
                for arg, value in field.args.items()
                if not (value.description or "").strip()
            ]
    elif isinstance(named, GraphQLInputObjectType):
        missing += [
            f"{name}.{field_name}"
            for field_name, field in named.fields.items()
            if not (field.description or "").strip()
        ]
    elif isinstance(named, GraphQLEnumType):
        missing += [
            f"{name}.{value_name}"
            for value_name, value in named.values.items()
            if not (value.description or "").strip()
        ]
    return missing


def schema() -> GraphQLSchema:
    return build_schema(Settings(_env_file=None))._schema


def test_every_part_of_the_schema_is_described() -> None:
    missing = undescribed(schema())
    assert missing == [], "Described nowhere:\n" + "\n".join(missing)


def test_the_walk_sees_every_kind_of_element() -> None:
    """The walk itself can fail: it finds descriptions on each kind of element it checks."""
    built = schema()
    ours = [t for n, t in built.type_map.items() if not n.startswith("__")]
    for kind in (GraphQLObjectType, GraphQLInputObjectType, GraphQLEnumType, GraphQLUnionType):
        assert any(isinstance(t, kind) for t in ours), kind
    assert built.type_map["Delivery"].fields["kind"].description
    assert built.type_map["Query"].fields["account"].args["id"].description
    assert built.type_map["ErrorCode"].values["NOT_FOUND"].description
    # The built-in scalars and types Strawberry brings are described too.
    for name in ("DateTime", "JSON", "Upload", "PageInfo", "Node"):
        assert built.type_map[name].description, name
    # A value without a description is named.
    built.type_map["ErrorCode"].values["NOT_FOUND"].description = None
    assert "ErrorCode.NOT_FOUND" in undescribed(built)
