"""Error codes are defined once (services.shared.errors.ErrorCode) and documented once
(docs/errors.md): the two lists are equal, no raise site spells a code as a string literal,
every member is raised somewhere, and clients still receive plain strings.

The source check reads services/, schema/, resolvers/ and portico/ with `ast`. It flags a
code-shaped string literal where a code goes (the first argument of input_error, UserError,
an *Error class or `fail`; a `code=` keyword; a `{"code": ...}` dict; `code = ...`; a
comparison with `.code`), and any string literal equal to a member's value elsewhere (tables
such as refusal maps), except audit actions, which share some names.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from schema import ids
from services.shared.errors import ErrorCode
from tests.support.api import Api, Firm, add_staff, api_for

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("services", "schema", "resolvers", "portico")
DOC = ROOT / "docs" / "errors.md"
ENUM_MODULE = ROOT / "services" / "shared" / "errors.py"

# A documented code is the first cell of a table row: | `CODE` | meaning | where |
DOC_ROW = re.compile(r"^\|\s*`([A-Za-z0-9_]+)`\s*\|", re.MULTILINE)
CODE_SHAPE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$|^[A-Z]{4,}$")
# Calls whose first argument is a code.
CODE_FACTORIES = re.compile(r"^(input_error|fail|_?[A-Za-z]*Error|_[a-z_]*_error)$")
# Calls whose string arguments are not error codes though they may share a name.
NOT_CODES = {"record"}  # audit.record(scope, "INVITATION_REVOKED", ...): an audit action


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.line}: {self.what}"


def source_files() -> list[Path]:
    files = []
    for folder in SOURCE_DIRS:
        files += [p for p in sorted((ROOT / folder).rglob("*.py")) if "migrations" not in p.parts]
    return files


def documented_codes() -> list[str]:
    return DOC_ROW.findall(DOC.read_text())


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _literals(node: ast.AST | None) -> Iterator[ast.Constant]:
    """The string constants `node` may evaluate to (through if-else, and/or, tuples)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node
    elif isinstance(node, ast.IfExp):
        yield from _literals(node.body)
        yield from _literals(node.orelse)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from _literals(value)
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        for element in node.elts:
            yield from _literals(element)


def _is_code_name(node: ast.AST) -> bool:
    name = _name(node)
    return name is not None and (name == "code" or name.endswith("_code"))


def _code_slots(tree: ast.AST) -> Iterator[tuple[ast.AST | None, str]]:
    """Expressions that hold an error code, with what holds them."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = _name(node.func)
            if callee and CODE_FACTORIES.match(callee) and node.args:
                yield node.args[0], f"the code of {callee}()"
            for keyword in node.keywords:
                if keyword.arg == "code":
                    yield keyword.value, f"code= of {callee}()"
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "code":
                    yield value, 'a {"code": ...} entry'
        elif isinstance(node, ast.Assign):
            if any(_is_code_name(target) for target in node.targets):
                yield node.value, "an assignment to code"
        elif isinstance(node, ast.AnnAssign):
            if _is_code_name(node.target):
                yield node.value, "an assignment to code"
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_code_name(side) for side in sides):
                for side in sides:
                    yield side, "a comparison with code"


def _skipped(tree: ast.AST) -> set[int]:
    """ids of constants that are no codes: docstrings, audit actions, the enum's own values."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            skipped.add(id(body[0].value))
        if isinstance(node, ast.Call) and _name(node.func) in NOT_CODES:
            skipped.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.ClassDef) and node.name == ErrorCode.__name__:
            skipped.update(id(n) for n in ast.walk(node))
    return skipped


def literal_codes(path: Path) -> list[Finding]:
    tree = ast.parse(path.read_text(), str(path))
    skipped = _skipped(tree)
    values = {code.value for code in ErrorCode}
    found: dict[tuple[int, str], Finding] = {}
    for slot, holder in _code_slots(tree):
        for constant in _literals(slot):
            if id(constant) not in skipped and CODE_SHAPE.match(constant.value):
                what = f"'{constant.value}' is {holder}: use ErrorCode.{constant.value}"
                if constant.value not in values:
                    what += " (and add it to ErrorCode and docs/errors.md)"
                key = (constant.lineno, constant.value)
                found[key] = Finding(path, constant.lineno, what)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in values and id(node) not in skipped:
            key = (node.lineno, node.value)
            found.setdefault(
                key,
                Finding(path, node.lineno, f"'{node.value}' spells ErrorCode.{node.value}"),
            )
    return sorted(found.values(), key=lambda f: f.line)


def raised_members() -> dict[str, list[Finding]]:
    """Where each `ErrorCode.X` is used, outside the enum's definition."""
    used: dict[str, list[Finding]] = {}
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and _name(node.value) == ErrorCode.__name__:
                used.setdefault(node.attr, []).append(Finding(path, node.lineno, node.attr))
    return used


# The list and the documentation


def test_every_code_is_documented_once_and_every_documented_code_exists():
    documented = documented_codes()
    members = [code.value for code in ErrorCode]
    duplicates = sorted({c for c in documented if documented.count(c) > 1})
    assert not duplicates, f"docs/errors.md lists these more than once: {duplicates}"
    undocumented = [c for c in members if c not in documented]
    assert not undocumented, f"ErrorCode members missing from docs/errors.md: {undocumented}"
    unknown = [c for c in documented if c not in members]
    assert not unknown, f"docs/errors.md lists codes ErrorCode does not have: {unknown}"


def test_members_are_their_own_values():
    # The wire format is the value: a member named otherwise would confuse every reader.
    assert [c.name for c in ErrorCode] == [c.value for c in ErrorCode]


# The source


def test_no_error_code_is_spelled_as_a_string_literal():
    findings = [f for path in source_files() for f in literal_codes(path)]
    assert not findings, "error codes that bypass ErrorCode:\n" + "\n".join(map(str, findings))


def test_every_member_is_raised_somewhere():
    used = raised_members()
    dead = [code.name for code in ErrorCode if code.name not in used]
    assert not dead, (
        f"ErrorCode members ({ENUM_MODULE.relative_to(ROOT)}) that no code raises: {dead}. "
        "Remove them and their rows in docs/errors.md, unless a raise site still spells them "
        "as a literal (see test_no_error_code_is_spelled_as_a_string_literal)."
    )


def test_the_source_check_catches_each_kind_of_bypass(tmp_path: Path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "raise input_error('NOT_FOUND', 'No such account.', 'id')\n"
        "errors.append(UserError('BRAND_NEW', 'x'))\n"
        "GraphQLError('m', extensions={'code': 'INTERNAL'})\n"
        "code = 'FORBIDDEN'\n"
        "refusals = {'used': ('LINK_USED', 'This link has been used already.')}\n"
        "if e.code == 'MISSING_COLUMN': pass\n"
        "audit.record(scope, 'INVITATION_REVOKED', account_id=1)\n"
        "raise input_error(ErrorCode.NOT_FOUND, 'No such account.', 'id')\n"
    )
    lines = [f.line for f in literal_codes(sample)]
    assert lines == [1, 2, 3, 4, 5, 6]
    assert "add it to ErrorCode" in str(literal_codes(sample)[1])


# The wire


def _codes_in(text: str, code: str) -> bool:
    """The raw JSON carries the code as a plain string (a StrEnum serialises as its value)."""
    return re.search(rf'"code":\s*"{code}"', text) is not None


async def test_codes_reach_clients_as_the_same_plain_strings(client: httpx.AsyncClient, acme: Firm):
    async def post(api: Api, query: str, variables: dict | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {api.token}"} if api.token else {}
        body = {"query": query, "variables": variables or {}}
        response = await client.post("/graphql", json=body, headers=headers)
        client.cookies.clear()
        return response

    update = """
        mutation($id: ID!) { updateAccount(id: $id, input: {name: "X"}) { errors { code } } }
    """
    missing = ids.encode("Account", 999_999)

    response = await post(acme.api, update, {"id": missing})
    assert _codes_in(response.text, "NOT_FOUND"), response.text
    [error] = response.json()["data"]["updateAccount"]["errors"]
    assert type(error["code"]) is str and error["code"] == "NOT_FOUND"

    reader = await api_for(client, await add_staff(acme, "reader@acme.example"))
    response = await post(reader, update, {"id": missing})
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": "FORBIDDEN"}, response.text
    assert _codes_in(response.text, "FORBIDDEN")

    response = await post(Api(client), "{ accounts { totalCount } }")
    assert response.json()["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}

    response = await post(acme.api, "{ accounts(first: -1) { totalCount } }")
    extensions = response.json()["errors"][0]["extensions"]
    assert extensions == {"code": "BAD_USER_INPUT", "argument": "first"}, response.text
