"""The session lookup every request makes reads its rows by hand (services/shared/
session_rows): the models it builds equal Tortoise's `select_related` ones field by field,
and the sessions it calls live are exactly those the ORM's filter finds, for staff and
clients, revoked, expired and deactivated."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tortoise.expressions import Q
from tortoise.models import Model

from models import Session, StaffMember
from services.shared import session_rows, sessions
from services.shared.tokens import hash_token
from tests.support.api import Firm, add_staff
from tests.support.login import portal_user

RELATED = ("staff_member", "portal_user", "firm")


def fields_of(model: Model | None) -> dict[str, Any] | None:
    if model is None:
        return None
    return {name: getattr(model, name) for name in model._meta.fields_db_projection}


async def sessions_of_every_kind(acme: Firm, globex: Firm) -> dict[str, str]:
    """A token for each kind of session: name -> token."""
    tokens: dict[str, str] = {}
    staff = await StaffMember.get(pk=acme.owner.pk)
    tokens["staff"], _ = await sessions.start_staff_session(staff, timedelta(hours=1))
    gone = await add_staff(acme, "gone@acme.example")
    tokens["deactivated staff"], _ = await sessions.start_staff_session(gone, timedelta(hours=1))
    await StaffMember.filter(pk=gone.pk).update(active=False)
    tokens["expired"], expired = await sessions.start_staff_session(staff, timedelta(hours=1))
    await Session.filter(pk=expired.pk).update(expires_at=sessions.now() - timedelta(seconds=1))
    tokens["revoked"], revoked = await sessions.start_staff_session(staff, timedelta(hours=1))
    await sessions.revoke(revoked)
    anna = await portal_user(acme.owner.firm_id)
    tokens["client"], _ = await sessions.start_client_session(anna, timedelta(hours=1), None)
    other = await StaffMember.get(pk=globex.owner.pk)
    tokens["other firm"], _ = await sessions.start_staff_session(other, timedelta(hours=1))
    return tokens


async def test_the_hand_read_session_equals_the_orms_model_by_model(
    acme: Firm, globex: Firm
) -> None:
    tokens = await sessions_of_every_kind(acme, globex)
    hashes = [hash_token(token) for token in tokens.values()]
    mine = {s.token_hash: s for s in await session_rows.sessions_with_people(hashes)}
    orms = {
        s.token_hash: s
        for s in await Session.filter(token_hash__in=hashes).select_related(*RELATED)
    }
    assert set(mine) == set(orms) == set(hashes)
    for token_hash, orm in orms.items():
        assert fields_of(mine[token_hash]) == fields_of(orm)
        for name in RELATED:
            assert fields_of(getattr(mine[token_hash], name)) == fields_of(getattr(orm, name))
    assert await session_rows.sessions_with_people([]) == []
    assert await session_rows.sessions_with_people([hash_token("made-up")]) == []


async def test_live_sessions_are_those_the_orms_filter_finds(acme: Firm, globex: Firm) -> None:
    tokens = await sessions_of_every_kind(acme, globex)
    live_by_orm = set(
        await Session.filter(
            Q(staff_member__active=True) | Q(portal_user_id__isnull=False),
            revoked_at=None,
            expires_at__gt=sessions.now(),
        ).values_list("token_hash", flat=True)
    )
    for name, token in tokens.items():
        found = await sessions.resolve_session(token)
        assert (found is not None) == (hash_token(token) in live_by_orm), name
    assert {n for n, t in tokens.items() if hash_token(t) in live_by_orm} == {
        "staff",
        "client",
        "other firm",
    }
    shared = await sessions._sessions_by_token(list(tokens.values()))
    assert [s is not None for s in shared] == [
        await sessions.resolve_session(t) is not None for t in tokens.values()
    ]
    assert await sessions.resolve_session("x" * 257) is None
    assert await sessions.resolve_session(None) is None
