"""The house's one-way stairs: every import, read with `ast` (inside functions too, never
behind `if TYPE_CHECKING:`), points down the layers, and no modules import each other in a
circle outside schema/.

Layers, lowest first: models < services < schema < compiled < resolvers < portico
(portico.settings may be read by all). Inside services/, packages import along one order:
shared < outbound < webhooks < mail < portal < crm < firm < loops.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("models", "services", "schema", "compiled", "resolvers", "portico")
SERVICE_PACKAGES = ("shared", "outbound", "webhooks", "mail", "portal", "crm", "firm", "loops")
READ_BY_ALL = ("portico.settings",)
CYCLES_ALLOWED_IN = ("schema",)  # strawberry types refer to each other by design


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted
    line: int

    def __str__(self) -> str:
        path = self.source.replace(".", "/") + ".py"
        return f"{path}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
    return name == "TYPE_CHECKING"


def _imports_in(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, int]]:
    found: list[tuple[ast.Import | ast.ImportFrom, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imports_of(name: str, path: Path, known: set[str]) -> list[Import]:
    """The project modules `name` imports; `from package import module` counts as the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    result = []
    for node, line in _imports_in(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                result.append(Import(name, target, line))
    return result


def all_imports() -> list[Import]:
    modules = project_modules()
    known = set(modules)
    return [i for name, path in modules.items() for i in imports_of(name, path, known)]


def rank(module: str) -> tuple[int, int]:
    """Where a module stands: its layer, then (in services/) its package."""
    parts = module.split(".")
    layer = LAYERS.index(parts[0])
    if parts[0] == "services" and len(parts) > 1 and parts[1] in SERVICE_PACKAGES:
        return layer, SERVICE_PACKAGES.index(parts[1])
    return layer, -1


def upward(imp: Import) -> bool:
    if imp.target in READ_BY_ALL or imp.target.startswith(tuple(p + "." for p in READ_BY_ALL)):
        return False
    return rank(imp.target) > rank(imp.source)


def cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), outside CYCLES_ALLOWED_IN."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.source.split(".")[0] in CYCLES_ALLOWED_IN:
            continue
        graph.setdefault(imp.source, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                strongconnect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in list(graph):
        if node not in index:
            strongconnect(node)
    return groups


def test_every_import_points_down_the_layers() -> None:
    imports = all_imports()
    assert len(imports) > 300, "the walk found too few imports to be looking at the code"
    wrong = [str(i) for i in imports if upward(i)]
    assert wrong == [], "imports that point up:\n" + "\n".join(wrong)


def test_no_import_cycle_outside_schema() -> None:
    found = cycles(all_imports())
    assert found == [], "import cycles:\n" + "\n".join(" ⇄ ".join(c) for c in found)


@pytest.mark.parametrize(
    ("source", "code", "expected"),
    [
        # one upward import of each kind the test must catch
        ("schema/types.py", "from resolvers.permissions import IsStaff", "resolvers.permissions"),
        ("services/mail/sync.py", "def f():\n    from services.loops import x", "services.loops.x"),
        ("models/crm.py", "import services.shared.scope", "services.shared.scope"),
    ],
)
def test_the_walk_catches_an_upward_import(
    source: str, code: str, expected: str, tmp_path: Path
) -> None:
    known = {"resolvers.permissions", "services.loops.x", "services.shared.scope"}
    path = tmp_path / "probe.py"
    path.write_text(code)
    [imp] = imports_of(source.removesuffix(".py").replace("/", "."), path, known)
    assert imp.target == expected
    assert upward(imp)


def test_type_checking_imports_and_settings_do_not_count(tmp_path: Path) -> None:
    path = tmp_path / "probe.py"
    path.write_text(
        "from typing import TYPE_CHECKING\nfrom portico.settings import Settings\n"
        "if TYPE_CHECKING:\n    from resolvers.context import Context\n"
    )
    imports = imports_of("services.shared.probe", path, {"portico.settings", "resolvers.context"})
    assert [i.target for i in imports] == ["portico.settings"]
    assert not any(upward(i) for i in imports)


def test_a_cycle_is_named() -> None:
    imports = [
        Import("services.mail.a", "services.mail.b", 1),
        Import("services.mail.b", "services.mail.a", 2),
    ]
    assert cycles(imports) == [["services.mail.a", "services.mail.b"]]
    assert cycles([Import("schema.a", "schema.b", 1), Import("schema.b", "schema.a", 1)]) == []
