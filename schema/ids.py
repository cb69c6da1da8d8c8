"""Opaque global ids: base64 of "Type:pk", decoded only into the type the caller expects."""

from __future__ import annotations

from strawberry.relay import GlobalID

from models import MAX_PK


def decode(value: str, type_name: str) -> int | None:
    """The primary key inside `value` when it is an id of `type_name`; None otherwise."""
    parsed = parse(value)
    if parsed is None or parsed[0] != type_name:
        return None
    return parsed[1]


def parse(value: str) -> tuple[str, int] | None:
    try:
        gid = GlobalID.from_id(value)
        pk = int(gid.node_id)
    except (ValueError, TypeError):  # GlobalIDValueError is a ValueError
        return None
    return (gid.type_name, pk) if 0 < pk <= MAX_PK else None


def encode(type_name: str, pk: int) -> str:
    return str(GlobalID(type_name, str(pk)))
