"""Invitation rules (services/portal/invitations.py) through the API: single use under a race,
a revocation that lands while an accept is under way, expiry against resending.

The races are made certain, not likely: the accept's password hashing (after its status
check, before its claiming UPDATE) is wrapped so that the test decides what happens there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from models import Invitation, PortalAccess, PortalUser
from services.outbound.outbox import readable_date
from services.shared import passwords
from services.shared.sessions import now
from tests.support.api import Api
from tests.support.login import (
    FLAGS,
    RESEND,
    STATUS,
    accept,
    audit_entries,
    bare_pk,
    deliver,
    invitee,
    login_on,
    text_of,
    token_in,
)
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)

WAIT = 10.0  # seconds: a step of a race that never comes fails the test instead of hanging


def _hold_hashing(monkeypatch: pytest.MonkeyPatch, before: Callable[[], Awaitable[None]]) -> None:
    """Every accept of a new user runs `before()` between its status check and its claim."""
    real = passwords.hash_password

    async def held(password: str) -> str:
        async with asyncio.timeout(WAIT):
            await before()
        return await real(password)

    monkeypatch.setattr(passwords, "hash_password", held)


def _code(payload: dict) -> str:
    return payload["errors"][0]["code"] if payload["errors"] else "OK"


async def test_two_parallel_accepts_of_one_link_only_one_wins(
    acme, client, settings, smtp, monkeypatch
):
    """Single use: both requests pass the status check, only one may claim the invitation."""
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    [mail] = await deliver(settings, smtp)
    both_checked = asyncio.Barrier(2)
    _hold_hashing(monkeypatch, both_checked.wait)

    results = await asyncio.gather(
        accept(Api(client), token_in(mail)), accept(Api(client), token_in(mail))
    )
    assert sorted(_code(r) for r in results) == ["INVITATION_USED", "OK"]
    [lost] = [r for r in results if r["errors"]]
    assert lost["errors"] == [
        {
            "code": "INVITATION_USED",
            "field": ["token"],
            "message": "This invitation has been used already. Sign in instead.",
        }
    ]
    assert [r["token"] is None for r in results].count(True) == 1
    assert await PortalUser.all().count() == 1
    assert await PortalAccess.all().count() == 1
    assert len(await audit_entries(acme.api, anna.account_id, "INVITATION_ACCEPTED")) == 1


async def _revoked_while_accepting(acme, client, settings, smtp, monkeypatch) -> dict:
    """Anna accepts her invitation; LOGIN goes off after the accept checked the link and before
    it claims it. The accept's payload."""
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    [mail] = await deliver(settings, smtp)
    checked, revoked = asyncio.Event(), asyncio.Event()

    async def revoke_meanwhile() -> None:
        checked.set()
        await revoked.wait()

    _hold_hashing(monkeypatch, revoke_meanwhile)
    accepting = asyncio.create_task(accept(Api(client), token_in(mail)))
    async with asyncio.timeout(WAIT):
        await checked.wait()
    off = {"input": {"accountEmailId": anna.account_email_id, "login": False}}
    await acme.api.ok(FLAGS, off)
    revoked.set()
    payload = await accepting

    status = (await acme.api.data(STATUS, {"id": anna.account_id}))["account"]
    assert status["emails"][0]["portalStatus"] == "NO_ACCESS"
    assert [i["status"] for i in status["invitations"]] == ["REVOKED"]
    return payload


async def test_a_revocation_during_an_accept_wins(acme, client, settings, smtp, monkeypatch):
    refused = await _revoked_while_accepting(acme, client, settings, smtp, monkeypatch)
    assert refused["errors"] and refused["token"] is None and refused["viewer"] is None
    assert await PortalAccess.all().count() == 0
    assert await PortalUser.all().count() == 0
    assert await Invitation.filter(accepted_at__not_isnull=True).count() == 0


async def test_a_revocation_during_an_accept_answers_revoked(
    acme, client, settings, smtp, monkeypatch
):
    refused = await _revoked_while_accepting(acme, client, settings, smtp, monkeypatch)
    assert _code(refused) == "INVITATION_REVOKED"


async def test_an_expired_invitation_stays_expired_when_a_new_one_is_sent(
    acme, client, settings, smtp
):
    """Resending supersedes pending invitations only: an expired link still says expired."""
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    [old_mail] = await deliver(settings, smtp)
    await Invitation.all().update(expires_at=now() - timedelta(seconds=1))

    await acme.api.ok(RESEND, {"id": anna.account_email_id})
    _, new_mail = await deliver(settings, smtp)
    statuses = (await acme.api.data(STATUS, {"id": anna.account_id}))["account"]["invitations"]
    assert [i["status"] for i in statuses] == ["PENDING", "EXPIRED"]
    assert await audit_entries(acme.api, anna.account_id, "INVITATION_REVOKED") == []
    refused = await accept(Api(client), token_in(old_mail))
    assert refused["errors"] == [
        {
            "code": "INVITATION_EXPIRED",
            "field": ["token"],
            "message": "This invitation has expired. Ask the firm for a new one.",
        }
    ]
    page = await client.get("/invitation", params={"token": token_in(old_mail)})
    assert page.status_code == 410 and "expired" in page.text and "withdrawn" not in page.text
    assert (await accept(Api(client), token_in(new_mail)))["errors"] == []


async def test_resending_revokes_the_pending_invitation_and_audits_it(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    first = (await login_on(acme.api, anna.account_email_id))["latestInvitation"]
    second = (await acme.api.ok(RESEND, {"id": anna.account_email_id}))["invitation"]
    [entry] = await audit_entries(acme.api, anna.account_id, "INVITATION_REVOKED")
    assert entry == {
        "action": "INVITATION_REVOKED",
        "actor": "owner@acme.example",
        "email": "anna@miller.example",
        "before": {"invitation": bare_pk(first["id"], "Invitation")},
        "after": {"reason": "superseded"},
    }
    [sent, *_] = await audit_entries(acme.api, anna.account_id, "INVITATION_SENT")
    assert sent["after"]["invitation"] == bare_pk(second["id"], "Invitation")
    # The first invitation's mail was withdrawn before any worker took it.
    [mail] = await deliver(settings, smtp)
    assert (await accept(Api(client), token_in(mail)))["errors"] == []


async def test_refused_links_say_why(acme, client, settings, smtp):
    """acceptInvitation and the invitation page give each refusal its own sentence."""
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    [old] = await deliver(settings, smtp)
    await acme.api.ok(RESEND, {"id": anna.account_email_id})
    _, new = await deliver(settings, smtp)
    assert (await accept(Api(client), token_in(new)))["errors"] == []
    said = {
        "unknown": "This invitation link is not valid.",
        "used": "This invitation has been used already. Sign in instead.",
        "revoked": "This invitation was withdrawn. Ask the firm to send a new one.",
    }
    for token, code, key in [
        ("not-a-token", "INVITATION_INVALID", "unknown"),
        (token_in(new), "INVITATION_USED", "used"),
        (token_in(old), "INVITATION_REVOKED", "revoked"),
    ]:
        refused = await accept(Api(client), token)
        assert refused["errors"] == [{"code": code, "field": ["token"], "message": said[key]}]
        page = await client.get("/invitation", params={"token": token})
        assert f'<p class="error" role="alert">{said[key]}</p>' in page.text, key
        assert [s for s in said.values() if s in page.text] == [said[key]]
    assert (await client.get("/invitation", params={"token": ""})).status_code == 404
    assert said["unknown"] in (await client.get("/invitation", params={"token": ""})).text


async def test_invitation_terms_are_mailed_and_audited(acme, client, settings, smtp):
    """The mail says when the link expires (the TTL from now); the audit entries name the
    invitation, its expiry and, on acceptance, the portal user."""
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    created = (await login_on(acme.api, anna.account_email_id, send=False))["latestInvitation"]
    sent = (await acme.api.ok(RESEND, {"id": anna.account_email_id}))["invitation"]
    [mail] = await deliver(settings, smtp)
    first = await Invitation.get(pk=bare_pk(created["id"], "Invitation"))
    second = await Invitation.get(pk=bare_pk(sent["id"], "Invitation"))
    ttl = second.expires_at - now()
    assert timedelta(hours=settings.invitation_ttl_hours, minutes=-1) < ttl
    assert ttl <= timedelta(hours=settings.invitation_ttl_hours)
    assert f"expires on {readable_date(second.expires_at)}" in text_of(mail)
    [created_entry] = await audit_entries(acme.api, anna.account_id, "INVITATION_CREATED")
    assert created_entry["after"] == {
        "invitation": first.pk,
        "expiresAt": first.expires_at.isoformat(),
    }
    [sent_entry] = await audit_entries(acme.api, anna.account_id, "INVITATION_SENT")
    assert sent_entry["after"] == {
        "invitation": second.pk,
        "expiresAt": second.expires_at.isoformat(),
    }

    accepted = await accept(Api(client), token_in(mail))
    assert accepted["viewer"]["activatedAt"] is not None
    user = await PortalUser.get(email_normalized="anna@miller.example")
    assert user.activated_at is not None
    [entry] = await audit_entries(acme.api, anna.account_id, "INVITATION_ACCEPTED")
    assert entry == {
        "action": "INVITATION_ACCEPTED",
        "actor": "anna@miller.example",
        "email": "anna@miller.example",
        "before": None,
        "after": {"invitation": second.pk, "portalUser": user.pk},
    }


async def test_a_new_client_needs_a_strong_password(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    [mail] = await deliver(settings, smtp)
    for password in [None, "", "short", "aaaaaaaaaaaa"]:
        refused = await accept(Api(client), token_in(mail), password)
        assert [(e["code"], e["field"]) for e in refused["errors"]] == [
            ("WEAK_PASSWORD", ["password"])
        ], password
    assert await PortalUser.all().count() == 0
    assert (await accept(Api(client), token_in(mail)))["errors"] == []
