"""The sessions of some token hashes with their staff member, portal user and firm, by one
hand-written SELECT: every request looks its session up, and building that query through
Tortoise (three joins, four models) cost over twenty times the statement.

The columns are the models' own (read from their Tortoise meta once, so a new column is
included by itself), and rows become models through `Model._init_from_db`, the call
Tortoise's executor makes for the same rows: the same values and types as the ORM gives.
Whether a session is live is decided in Python from those values (services/shared/sessions
says what live means), so no time is compared in SQL. tests/test_session_rows.py compares
every model with the ORM's.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from tortoise.models import Model

from models import Firm, PortalUser, Session, StaffMember
from services.shared import sql

# (the Session attribute, its model, the table's alias in the statement)
_RELATED: tuple[tuple[str, type[Model], str], ...] = (
    ("staff_member", StaffMember, "m"),
    ("portal_user", PortalUser, "u"),
    ("firm", Firm, "f"),
)


def _columns(model: type[Model]) -> list[str]:
    """The model's columns, as `_init_from_db` takes them."""
    meta = model._meta
    fields = (*meta.db_native_fields, *meta.db_default_fields, *meta.db_complex_fields)
    return [column for column, _, _ in fields]


@cache
def _statement() -> tuple[str, tuple[tuple[str, list[str]], ...]]:
    """The SELECT without its IN list, and each model's alias and columns in row order."""
    parts = [("s", _columns(Session))]
    joins = []
    for attribute, model, alias in _RELATED:
        parts.append((alias, _columns(model)))
        key = Session._meta.fields_map[attribute].source_field  # type: ignore[attr-defined]
        joins.append(
            f' LEFT JOIN "{model._meta.db_table}" {alias}'
            f' ON {alias}."{model._meta.db_pk_column}" = s."{key}"'
        )
    selected = ", ".join(f'{alias}."{column}"' for alias, columns in parts for column in columns)
    statement = f'SELECT {selected} FROM "{Session._meta.db_table}" s{"".join(joins)}'
    return statement, tuple(parts)


async def sessions_with_people(token_hashes: Sequence[str]) -> list[Session]:
    """The sessions with these token hashes (any state), each with its staff member, portal
    user and firm loaded as `select_related` would."""
    if not token_hashes:
        return []
    statement, parts = _statement()
    rows = await sql.select(
        f'{statement} WHERE s."token_hash" IN ({sql.marks(len(token_hashes))})',
        list(token_hashes),
    )
    return [_session(row, parts) for row in rows]


def _session(row: Any, parts: tuple[tuple[str, list[str]], ...]) -> Session:
    values = list(row)
    at = 0
    made: list[Model | None] = []
    for (_, columns), model in zip(parts, (Session, *(m for _, m, _ in _RELATED)), strict=True):
        own = values[at : at + len(columns)]
        at += len(columns)
        kwargs = dict(zip(columns, own, strict=True))
        present = kwargs[model._meta.db_pk_column] is not None  # a LEFT JOIN that matched
        made.append(model._init_from_db(**kwargs) if present else None)
    session = made[0]
    assert isinstance(session, Session)
    for (attribute, _, _), related in zip(_RELATED, made[1:], strict=True):
        object.__setattr__(session, f"_{attribute}", related)  # as Tortoise's executor does
    return session
