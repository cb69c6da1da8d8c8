"""Private mail threads, the reviewer's findings (issue 16 part 3), through the API against a
real Dovecot: privacy follows the mailbox and the shares as they are when mail is stored (a
switch or share between a pass's fetch and its store), a SHARED mailbox's copy is the firm's,
a deactivated member's threads can be shared by an owner or admin, large switches in bounded
statements, unsharing after a disconnection, and alerts of private mail."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from models import OutboundEmail
from schema import ids
from services.mail import alerts, threads
from services.mail import store as message_store
from tests.support.imap import imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.mail import add_mailbox, imap_user
from tests.support.sqlcount import count_sql
from tests.support.websocket import SYNC
from tests.test_private_threads import (
    BODY,
    PDF,
    SHARE,
    UNSHARE,
    VISIBILITY,
    documents,
    fresh,
    hidden,
    seen,
    world,
)

DEACTIVATE = """mutation($id: ID!) {
  updateStaffMember(id: $id, input: {active: false}) { errors { code } } }"""
DISCONNECT = "mutation($id: ID!) { disconnectMailbox(id: $id) { errors { code } } }"
NOTIFY = """mutation { setInboxNotification(setting: IMMEDIATE) { errors { code } } }"""
OWNERS_SEE_ALL = """mutation { updateFirmSettings(input: {ownersSeeAllMail: true}) {
  errors { code } } }"""


def pdf(n: int) -> tuple[str, str, bytes]:
    """The figures, a distinct file each (one content is one document per account)."""
    return (PDF[0], PDF[1], PDF[2] + str(n).encode())


def _before_store(monkeypatch: pytest.MonkeyPatch, step: Any) -> None:
    """`step()` runs once, after the pass fetched its mail and read its mailbox, just before
    the chunk is stored."""
    store = message_store.store_messages
    done: list[bool] = []

    async def then_store(*args: Any, **kwargs: Any) -> Any:
        if not done:
            done.append(True)
            await step()
        return await store(*args, **kwargs)

    monkeypatch.setattr(message_store, "store_messages", then_store)


@pytest.mark.parametrize("to", ["PERSONAL", "SHARED"])
async def test_a_switch_between_fetch_and_store_decides_the_stored_mail(
    acme, client, imap, settings, monkeypatch, to
):
    w = await world(acme, client, imap, settings)
    start = "SHARED" if to == "PERSONAL" else "PERSONAL"
    if start == "SHARED":
        await w.priya.ok(VISIBILITY, {"id": w.mailbox_id, "v": "SHARED"})

    async def switch() -> None:
        await w.priya.ok(VISIBILITY, {"id": w.mailbox_id, "v": to})

    _before_store(monkeypatch, switch)
    await w.receive(fresh("Switched meanwhile", body=BODY, attachments=[PDF]))
    message = await seen(w.erik, w.account_id, "Switched meanwhile")
    assert hidden(message) is (to == "PERSONAL")
    assert message["private"] is (to == "PERSONAL")
    assert await documents(w.owner, w.account_id) == (0 if to == "PERSONAL" else 1)


@pytest.mark.parametrize("change", ["share", "unshare"])
async def test_a_share_while_mail_of_the_thread_is_stored(
    acme, client, imap, settings, monkeypatch, change
):
    """The store reads the owner's shared threads; a share (or unshare) committing between
    that read and the store's commit is never missed: the two take their turns on the
    mailbox's row (PostgreSQL), or the one connection (SQLite)."""
    w = await world(acme, client, imap, settings)
    await w.receive(
        fresh("Figures", body=BODY, attachments=[PDF], message_id="<first@client.example>")
    )
    thread = (await seen(w.priya, w.account_id, "Figures"))["threadId"]
    if change == "unshare":
        await w.priya.ok(SHARE, {"t": thread})
    document = SHARE if change == "share" else UNSHARE
    ready = asyncio.Event()
    running: list[asyncio.Task] = []

    async def change_when_ready() -> None:
        await ready.wait()
        await w.priya.ok(document, {"t": thread})

    async def step() -> None:  # made outside the store's transaction, as a request would be
        running.append(asyncio.create_task(change_when_ready()))

    _before_store(monkeypatch, step)
    read = threads.shared_keys

    async def read_then_change(*args: Any) -> set[str]:
        found = await read(*args)
        if not ready.is_set():
            ready.set()
            # Let the change run as far as it can: to its end, unless the store holds it.
            await asyncio.wait(running, timeout=1)
        return found

    monkeypatch.setattr(threads, "shared_keys", read_then_change)
    answer = fresh(
        "Re: Figures",
        body=BODY,
        attachments=[PDF],
        in_reply_to="<first@client.example>",
        references=["<first@client.example>"],
    )
    await w.receive(answer)
    assert ready.is_set(), "the store read the shared threads"
    await asyncio.gather(*running)
    for subject in ("Figures", "Re: Figures"):
        message = await seen(w.erik, w.account_id, subject)
        assert message["threadId"] == thread
        assert hidden(message) is (change == "unshare"), subject


async def test_a_shared_mailboxs_copy_is_the_firms(acme, client, imap, settings):
    """The same message in Priya's personal mailbox and the firm's shared one: shared wins,
    whichever was synced first, and her unsharing the thread does not take it back."""
    w = await world(acme, client, imap, settings)
    office = await add_mailbox(acme.owner.firm_id, imap, settings, imap_user("office"))
    office_id = ids.encode("Mailbox", office.pk)
    for n, order in enumerate(["personal first", "shared first"]):
        raw = fresh(order, body=BODY, attachments=[pdf(n)], message_id=f"<copy{n}@client.example>")
        imap.append(office.username, raw)
        if order == "personal first":
            await w.receive(raw)
            assert hidden(await seen(w.erik, w.account_id, order))
            await w.priya.ok(SYNC, {"id": office_id})
        else:
            await w.priya.ok(SYNC, {"id": office_id})
            await w.receive(raw)
        message = await seen(w.erik, w.account_id, order)
        assert not message["private"] and not hidden(message), order
        assert message["attachments"][0]["document"] is not None, order  # saved now
        # No longer hers to take back: the firm's shared mailbox holds it.
        refused = await w.priya.post(UNSHARE, {"t": message["threadId"]})
        assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert not hidden(await seen(w.erik, w.account_id, order)), order
    assert await documents(w.owner, w.account_id) == 2


async def test_an_admin_shares_a_deactivated_members_threads(acme, client, imap, settings):
    """Priya left: her private mail is not stuck. An owner or admin may share (or unshare)
    her threads one by one; a colleague still may not, and nothing is published unasked."""
    w = await world(acme, client, imap, settings)
    await w.receive(fresh("Private figures", body=BODY, attachments=[PDF]))
    await w.receive(fresh("Her own matter", body=BODY))
    thread = (await seen(w.priya, w.account_id, "Private figures"))["threadId"]
    refused = await w.ada.post(SHARE, {"t": thread})  # while she is here: hers to decide
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    staff_id = ids.encode("StaffMember", w.priya_id)
    assert (await w.owner.data(DEACTIVATE, {"id": staff_id}))["updateStaffMember"]["errors"] == []

    for api in (w.ada, w.owner, w.erik):
        assert hidden(await seen(api, w.account_id, "Private figures"))
    refused = await w.erik.post(SHARE, {"t": thread})
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await w.ada.ok(SHARE, {"t": thread}))["private"] is False
    for api in (w.ada, w.owner, w.erik):
        assert not hidden(await seen(api, w.account_id, "Private figures"))
    assert await documents(w.owner, w.account_id) == 1
    assert hidden(await seen(w.erik, w.account_id, "Her own matter"))  # not asked: private
    # Mail arriving later in that thread through her mailbox is shared too.
    assert (await w.owner.ok(UNSHARE, {"t": thread}))["private"] is True
    assert hidden(await seen(w.erik, w.account_id, "Private figures"))


async def test_a_large_switch_updates_in_bounded_statements(
    acme, client, imap, settings, monkeypatch
):
    w = await world(acme, client, imap, settings)
    monkeypatch.setattr(threads, "UPDATE_CHUNK", 2)
    for n in range(5):
        w.imap.append(w.mailbox.username, fresh(f"Private {n}", body=BODY, attachments=[pdf(n)]))
    await w.priya.ok(SYNC, {"id": w.mailbox_id})
    with count_sql() as sql:
        await w.priya.ok(VISIBILITY, {"id": w.mailbox_id, "v": "SHARED"})
    # No statement lists more ids than a chunk.
    updates = [s for s in sql if s.startswith('UPDATE "message"')]
    assert len(updates) == 3, updates
    widest = max(sql, key=_listed)
    assert _listed(widest) <= 2, widest
    for n in range(5):
        message = await seen(w.erik, w.account_id, f"Private {n}")
        assert not hidden(message) and message["attachments"][0]["document"] is not None
    assert await documents(w.owner, w.account_id) == 5


def _listed(statement: str) -> int:
    """The most placeholders (SQLite's ?, PostgreSQL's $n) in one IN (...) list of a
    statement (its text, without the parameters logged after it)."""
    sql = statement.split(": [")[0]
    lists = re.findall(r"IN \(([^)]*)\)", sql, flags=re.IGNORECASE)
    return max((part.count("?") + len(re.findall(r"\$\d+", part)) for part in lists), default=0)


async def test_unsharing_after_the_mailbox_was_disconnected(acme, client, imap, settings):
    w = await world(acme, client, imap, settings)
    await w.receive(fresh("Shared once", body=BODY, attachments=[PDF]))
    await w.receive(fresh("Still private", body=BODY, attachments=[PDF]))
    shared = (await seen(w.priya, w.account_id, "Shared once"))["threadId"]
    private = (await seen(w.priya, w.account_id, "Still private"))["threadId"]
    await w.priya.ok(SHARE, {"t": shared})
    assert (await w.ada.data(DISCONNECT, {"id": w.mailbox_id}))["disconnectMailbox"]["errors"] == []

    # Nothing says which of the kept mail was hers: a clear refusal, nothing changes.
    payload = (await w.priya.data(UNSHARE, {"t": shared}))["unshareThread"]
    assert payload["errors"] == [
        {
            "code": "MAILBOX_DISCONNECTED",
            "field": ["threadId"],
            "message": "This thread's mail came through a personal mailbox that was "
            "disconnected: it stays shared.",
        }
    ]
    assert payload["private"] is None
    assert not hidden(await seen(w.erik, w.account_id, "Shared once"))
    # Her private mail kept is still hers to share (and then unshare, refused the same).
    assert (await w.priya.ok(UNSHARE, {"t": private}))["private"] is True  # private already
    assert (await w.priya.ok(SHARE, {"t": private}))["private"] is False
    assert not hidden(await seen(w.erik, w.account_id, "Still private"))
    refused = (await w.priya.data(UNSHARE, {"t": private}))["unshareThread"]["errors"]
    assert [e["code"] for e in refused] == ["MAILBOX_DISCONNECTED"]
    # Another member still may not.
    refused = await w.erik.post(UNSHARE, {"t": shared})
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_private_mail_alerts_only_those_who_may_read_it(acme, client, imap, settings):
    w = await world(acme, client, imap, settings)
    for api in (w.priya, w.erik, w.ada, w.owner):
        assert (await api.data(NOTIFY))["setInboxNotification"]["errors"] == []

    async def alerted(subject: str) -> list[str]:
        rows = await OutboundEmail.filter(kind=alerts.ALERT_KIND).order_by("to_address")
        return [r.to_address for r in rows if subject in r.subject]

    await w.receive(fresh("Private figures", body=BODY))
    assert await alerted("Private figures") == ["priya@acme.example"]
    assert (await w.owner.data(OWNERS_SEE_ALL))["updateFirmSettings"]["errors"] == []
    await w.receive(fresh("Seen by owners", body=BODY))
    assert await alerted("Seen by owners") == ["owner@acme.example", "priya@acme.example"]
    # Shared mail, as before: everyone who chose alerts.
    office = await add_mailbox(acme.owner.firm_id, imap, settings, imap_user("office"))
    imap.append(office.username, fresh("To the office", body=BODY))
    await w.priya.ok(SYNC, {"id": ids.encode("Mailbox", office.pk)})
    assert await alerted("To the office") == [
        "ada@acme.example",
        "erik@acme.example",
        "owner@acme.example",
        "priya@acme.example",
    ]
