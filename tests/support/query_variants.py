"""Generated query documents for the compiled path's differential test.

hypothesis-graphql draws valid selections over the schema with literal arguments; this
rewrites each into what clients send: arguments moved to variables, aliases, the same field
twice under two aliases with other arguments, sub-selections split between a field and a
fragment (named or inline) so they merge, @include/@skip on variables, `__typename`. Ids,
page sizes and cursors are drawn from the seeded data so most answers are not empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from graphql import (
    ArgumentNode,
    BooleanValueNode,
    DirectiveNode,
    DocumentNode,
    EnumValueNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLInputType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NamedTypeNode,
    NameNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionNode,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableDefinitionNode,
    VariableNode,
    get_named_type,
    is_object_type,
    parse_type,
    print_ast,
    validate,
)
from hypothesis import strategies as st
from hypothesis_graphql import queries

PAGE_SIZES = (1, 2, 3, 1, 2, 0, 1, 2, 3, -1)  # 0: the server's maximum; -1: refused


@dataclass
class Generated:
    query: str
    variables: dict[str, Any]


@dataclass
class _Rewrite:
    draw: st.DrawFn
    schema: GraphQLSchema
    ids: list[str]
    cursors: list[str]
    definitions: list[VariableDefinitionNode] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    fragments: list[FragmentDefinitionNode] = field(default_factory=list)
    count: int = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def chance(self, p: float) -> bool:
        return self.draw(st.floats(0, 1)) < p

    def variable(self, type_text: str, value: Any) -> VariableNode:
        name = self.name("v")
        self.definitions.append(
            VariableDefinitionNode(
                variable=VariableNode(name=NameNode(value=name)), type=parse_type(type_text)
            )
        )
        self.variables[name] = value
        return VariableNode(name=NameNode(value=name))

    def argument(self, node: ArgumentNode, definition: GraphQLArgument) -> ArgumentNode:
        name, value = node.name.value, node.value
        named = get_named_type(definition.type)
        plain: Any = _plain(value)
        if name == "first" and named.name == "Int":
            plain = self.draw(st.sampled_from(PAGE_SIZES))
        elif name == "after":
            plain = self.draw(st.sampled_from([None, *self.cursors, None, "not-a-cursor"]))
        elif named.name == "ID" and self.ids:
            plain = self.draw(st.sampled_from([*self.ids, *self.ids, "nope"]))
        elif isinstance(value, StringValueNode):
            plain = self.draw(st.sampled_from(["", "a", "lee", "Alpha", "x%_", value.value[:5]]))
        if plain is _KEEP:
            return node
        if self.chance(0.5):
            return replace(node, value=self.variable(str(definition.type), plain))
        return replace(node, value=_literal(plain, definition.type))

    def condition(self) -> DirectiveNode:
        which = self.draw(st.sampled_from(["include", "skip"]))
        value: ValueNode
        # Mostly so the field stays: a query whose every field is skipped says little.
        keep = self.chance(0.7)
        answer = keep if which == "include" else not keep
        if self.chance(0.8):
            value = self.variable("Boolean!", answer)
        else:
            value = BooleanValueNode(value=answer)
        return DirectiveNode(
            name=NameNode(value=which),
            arguments=(ArgumentNode(name=NameNode(value="if"), value=value),),
        )

    def selection_set(self, parent: Any, node: SelectionSetNode) -> SelectionSetNode:
        out: list[SelectionNode] = []
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                out.extend(self.field(parent, selection))
            elif isinstance(selection, InlineFragmentNode):
                inner = parent
                if selection.type_condition is not None:
                    inner = self.schema.get_type(selection.type_condition.name.value)
                out.append(
                    replace(
                        selection, selection_set=self.selection_set(inner, selection.selection_set)
                    )
                )
            else:
                out.append(selection)
        if self.chance(0.2):
            out.insert(self.draw(st.integers(0, len(out))), _field("__typename"))
        if len(out) > 1 and self.chance(0.3):
            out = self.fragment(parent, out)
        return SelectionSetNode(selections=tuple(out))

    def fragment(self, parent: Any, selections: list[SelectionNode]) -> list[SelectionNode]:
        """Some of the selections moved into a named or inline fragment."""
        cut = self.draw(st.integers(1, len(selections) - 1))
        kept, moved = selections[:cut], selections[cut:]
        inner = SelectionSetNode(selections=tuple(moved))
        kind = self.draw(st.sampled_from(["named", "typed", "bare"]))
        directives = (self.condition(),) if self.chance(0.2) else ()
        if (kind == "named" and is_object_type(parent)) or parent is self.schema.query_type:
            name = self.name("F")
            self.fragments.append(
                FragmentDefinitionNode(
                    name=NameNode(value=name),
                    type_condition=NamedTypeNode(name=NameNode(value=parent.name)),
                    selection_set=inner,
                )
            )
            return [*kept, FragmentSpreadNode(name=NameNode(value=name), directives=directives)]
        condition = NamedTypeNode(name=NameNode(value=parent.name)) if kind == "typed" else None
        return [
            *kept,
            InlineFragmentNode(
                type_condition=condition, selection_set=inner, directives=directives
            ),
        ]

    def field(self, parent: Any, node: FieldNode) -> list[SelectionNode]:
        name = node.name.value
        if name.startswith("__"):
            return [node]
        definition = parent.fields[name]
        copies = 2 if node.arguments and self.chance(0.15) else 1
        out: list[SelectionNode] = []
        for n in range(copies):
            if n or (node.alias is None and self.chance(0.2)):
                node = replace(node, alias=NameNode(value=self.name(f"{name}_")))
            out.extend(self.one_field(definition, node))
        return out

    def one_field(self, definition: Any, node: FieldNode) -> list[SelectionNode]:
        arguments = tuple(
            self.argument(a, definition.args[a.name.value]) for a in node.arguments or ()
        )
        directives = (self.condition(),) if self.chance(0.1) else ()
        selection_set = node.selection_set
        if selection_set is None:
            return [replace(node, arguments=arguments, directives=directives)]
        selection_set = self.selection_set(get_named_type(definition.type), selection_set)
        selections = selection_set.selections
        if len(selections) < 2 or not self.chance(0.2):
            return [
                replace(
                    node, arguments=arguments, directives=directives, selection_set=selection_set
                )
            ]
        # The field twice, its selection split, the second copy in an inline fragment:
        # the executor merges the halves into one answer.
        cut = self.draw(st.integers(1, len(selections) - 1))
        first = replace(
            node,
            arguments=arguments,
            directives=directives,
            selection_set=SelectionSetNode(selections=selections[:cut]),
        )
        second = replace(first, selection_set=SelectionSetNode(selections=selections[cut:]))
        spread = InlineFragmentNode(
            type_condition=None, selection_set=SelectionSetNode(selections=(second,))
        )
        return [first, spread]


class _Keep:
    pass


_KEEP = _Keep()


def _plain(value: ValueNode) -> Any:
    if isinstance(value, NullValueNode):
        return None
    if isinstance(value, BooleanValueNode):
        return value.value
    if isinstance(value, IntValueNode):
        return int(value.value)
    if isinstance(value, StringValueNode | EnumValueNode):
        return value.value
    return _KEEP  # lists, input objects, variables: left as drawn


def _literal(value: Any, type_: GraphQLInputType) -> ValueNode:
    if value is None:
        return NullValueNode()
    if isinstance(value, bool):
        return BooleanValueNode(value=value)
    if isinstance(value, int):
        return IntValueNode(value=str(value))
    if isinstance(get_named_type(type_), GraphQLEnumType):
        return EnumValueNode(value=value)
    return StringValueNode(value=value)


def _field(name: str) -> FieldNode:
    return FieldNode(name=NameNode(value=name))


@st.composite
def documents(
    draw: st.DrawFn,
    schema: GraphQLSchema,
    fields: list[str],
    ids: list[str],
    cursors: list[str],
) -> Generated:
    base: DocumentNode = draw(
        queries(schema, fields=fields, print_ast=lambda d: d, allow_x00=False, codec="ascii")
    )
    [operation] = base.definitions
    assert isinstance(operation, OperationDefinitionNode)
    root = schema.query_type
    assert isinstance(root, GraphQLObjectType)
    rewrite = _Rewrite(draw, schema, ids, cursors)
    selection_set = rewrite.selection_set(root, operation.selection_set)
    operation = replace(
        operation,
        variable_definitions=tuple(rewrite.definitions),
        selection_set=selection_set,
    )
    document = DocumentNode(definitions=(operation, *rewrite.fragments))
    errors = validate(schema, document)
    assert not errors, (errors, print_ast(document))
    return Generated(print_ast(document), rewrite.variables)
