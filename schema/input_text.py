"""One rule for all text input: control characters are refused before anything runs.

PostgreSQL cannot store NUL, neither database can store a lone surrogate as UTF-8, and no
field of Portico has a use for the other controls, so every string of an operation (its
variables, through input objects and lists, and every string literal of the document) is
checked at once, whatever field it is meant for. Tab, LF and CR stay: multi-line text, and
CRLF line ends from Windows and browser forms.

The refusal is one BAD_USER_INPUT error naming the first variable or argument at fault,
with no data, before any resolver runs. It travels as a validation error because that is
the one step strawberry shares between queries, mutations and subscriptions over HTTP and
WebSocket: every transport answers it as it answers any invalid document (an `error`
message on a WebSocket) and nothing executes. schema/validation.py places it among
graphql-core's errors where a rule reporting it at the document's start would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    ArgumentNode,
    DirectiveNode,
    DocumentNode,
    FieldNode,
    GraphQLError,
    ListValueNode,
    ObjectValueNode,
    StringValueNode,
    ValueNode,
    VariableDefinitionNode,
    Visitor,
    visit,
)
from graphql.language import SKIP

from services.shared.errors import ErrorCode

# C0 controls but tab, LF and CR; DEL and the C1 controls; any surrogate (a decoded str holds
# one only when it was unpaired, e.g. JSON "\ud800").
_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def refused_character(text: str) -> str | None:
    """The first character of `text` that no text input may hold, if any."""
    match = _REFUSED.search(text)
    return match.group() if match else None


def variable_refusal(variables: Mapping[str, Any]) -> GraphQLError | None:
    """The refusal of the first variable holding a refused character, if any: checked for
    every request, since the variables change from one request to the next."""
    for path, text in _strings_in(variables):
        character = refused_character(text)
        if character is not None:
            name = "$" + _render(path)
            return _refusal(f"Variable '{name}'", character, {"variable": name})
    return None


# A path as a linked list, (parent, key), rendered only when a string is refused: a big list
# in the variables costs one small tuple per item, not a formatted string.
_Path = tuple[Any, str | int] | None


def _strings_in(variables: Mapping[str, Any]) -> Iterator[tuple[_Path, str]]:
    """Every string in the variables with its path, depth first and without recursion
    (the nesting depth is the client's choice)."""
    stack: list[tuple[_Path, Any]] = [((None, name), value) for name, value in variables.items()]
    stack.reverse()
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            yield path, value
        elif isinstance(value, dict):
            stack.extend(((path, key), item) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((path, i), value[i]) for i in reversed(range(len(value))))


def _render(path: _Path) -> str:
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    text = ""
    for key in reversed(keys):
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


def literal_refusal(document: DocumentNode) -> GraphQLError | None:
    """The refusal of the first string literal holding a refused character, if any: the
    document alone decides it, so schema/validation.py keeps it with the document."""
    finder = _LiteralFinder()
    visit(document, finder)
    return finder.error


class _LiteralFinder(Visitor):
    """Finds the first refused string literal: in arguments (of fields and directives) and
    in variables' default values, the only places a document holds them."""

    def __init__(self) -> None:
        super().__init__()
        self.error: GraphQLError | None = None
        self.owner = ""  # the field or directive whose arguments are being visited

    def enter_field(self, node: FieldNode, *_: object) -> None:
        self.owner = f"field '{node.name.value}'"

    def enter_directive(self, node: DirectiveNode, *_: object) -> None:
        self.owner = f"directive '@{node.name.value}'"

    def enter_argument(self, node: ArgumentNode, *_: object) -> object:
        self._check(node.value, node.name.value, "Argument '{}' of " + self.owner, "argument")
        return SKIP

    def enter_variable_definition(self, node: VariableDefinitionNode, *_: object) -> object:
        if node.default_value is not None:
            name = "$" + node.variable.name.value
            self._check(node.default_value, name, "The default value of '{}'", "variable")
        return SKIP

    def _check(self, value: ValueNode, name: str, subject: str, kind: str) -> None:
        if self.error is not None:
            return
        for path, literal in _literals(value, name):
            character = refused_character(literal.value)
            if character is not None:
                extensions = {kind: path}
                self.error = _refusal(subject.format(path), character, extensions, literal)
                return


def _literals(value: ValueNode, path: str) -> Iterator[tuple[str, StringValueNode]]:
    """The string literals inside an argument's value (bounded by the token limit)."""
    if isinstance(value, StringValueNode):
        yield path, value
    elif isinstance(value, ListValueNode):
        for i, item in enumerate(value.values):
            yield from _literals(item, f"{path}[{i}]")
    elif isinstance(value, ObjectValueNode):
        for field in value.fields:
            yield from _literals(field.value, f"{path}.{field.name.value}")


def _refusal(
    subject: str,
    character: str,
    extensions: dict[str, str],
    node: StringValueNode | None = None,
) -> GraphQLError:
    kind = "a lone surrogate" if "\ud800" <= character <= "\udfff" else "a control character"
    return GraphQLError(
        f"{subject} contains {kind} (U+{ord(character):04X}). Text may hold tab, line feed "
        "and carriage return, but no other control character and no lone surrogate.",
        node,
        extensions={"code": ErrorCode.BAD_USER_INPUT, **extensions},
    )
