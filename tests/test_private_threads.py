"""Private mail threads (issue 16 part 3) through the API, against a real Dovecot: a PERSONAL
mailbox's threads are private to its owner (others see subject, participants and date, never
bodies or attachments) until the owner shares them; every field that returns message content
obeys it, for the owner, a colleague, an admin and the firm's owner."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from models import (
    Account,
    AccountEmail,
    Mailbox,
    MailboxVisibility,
    Message,
    OutboundEmail,
    StaffRole,
)
from portico.settings import Settings
from resolvers import fanout
from schema import ids
from tests.support.api import Api, Firm, add_staff, api_for, eventually
from tests.support.imap import ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import bare_pk, invitee
from tests.support.mail import CONNECT, add_mailbox, imap_user, mail, mailbox_input
from tests.support.smtp import SmtpServer, smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.support.sqlcount import count_sql
from tests.support.websocket import SYNC, serving, socket
from tests.test_mailbox_changes import DEADLINE, loop_settings, running

ANNA = "anna@miller.example"
BODY = "The figures are attached, for your eyes only."
PDF = ("figures.pdf", "application/pdf", b"%PDF-1.4 the figures")
FIELDS = """id private contentHidden subject from to cc sentAt threadId textBody htmlBody
  attachments { filename size document { id downloadUrl } }"""
INBOX = f"{{ inbox(first: 20) {{ edges {{ node {{ {FIELDS} }} }} }} }}"
TAB = f"""query($id: ID!) {{ account(id: $id) {{
  messages {{ edges {{ node {{ {FIELDS} }} }} }} documents {{ totalCount }} }} }}"""
NODE = f"query($id: ID!) {{ node(id: $id) {{ ... on Message {{ {FIELDS} }} }} }}"
SHARE = """mutation($t: ID!) { shareThread(threadId: $t) {
  errors { code field message } threadId private } }"""
UNSHARE = """mutation($t: ID!) { unshareThread(threadId: $t) {
  errors { code field message } threadId private } }"""
REPLY = """mutation($id: ID!) { replyToMessage(messageId: $id, body: "Thanks!") {
  errors { code } message { private contentHidden textBody } } }"""
SETTINGS = """mutation($on: Boolean!) { updateFirmSettings(input: {ownersSeeAllMail: $on}) {
  errors { code } firm { ownersSeeAllMail copyAddress } } }"""
VISIBILITY = """mutation($id: ID!, $v: MailboxVisibility!) {
  updateMailbox(id: $id, input: {visibility: $v}) {
    errors { code } mailbox { visibility owner { email } } } }"""
EXPORT = "mutation($id: ID!) { exportContactData(id: $id) { errors { code } downloadUrl } }"
SYNCED = """subscription { messageSynced { subject private contentHidden textBody
  attachments { filename } } }"""


@dataclass
class World:
    acme: Firm
    priya: Api  # an employee with the inbox right: the personal mailbox is hers
    erik: Api  # a colleague with the same rights
    ada: Api  # an admin
    priya_id: int
    account_id: str
    contact_id: str
    mailbox: Mailbox
    imap: ImapServer

    @property
    def owner(self) -> Api:  # the firm's owner
        return self.acme.api

    @property
    def mailbox_id(self) -> str:
        return ids.encode("Mailbox", self.mailbox.pk)

    async def receive(self, raw: bytes, api: Api | None = None) -> None:
        self.imap.append(self.mailbox.username, raw)
        await (api or self.priya).ok(SYNC, {"id": self.mailbox_id})


async def world(acme: Firm, client: httpx.AsyncClient, imap: ImapServer, settings: Settings):
    made = await invitee(acme.api, "Miller Family", ANNA)
    await AccountEmail.all().update(email_sync=True)
    await Account.filter(pk=bare_pk(made.account_id, "Account")).update(auto_save_attachments=True)
    priya = await add_staff(acme, "priya@acme.example", can_use_inbox=True)
    erik = await add_staff(acme, "erik@acme.example", can_use_inbox=True)
    ada = await add_staff(acme, "ada@acme.example", StaffRole.ADMIN)
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings, imap_user("priya"))
    mailbox.visibility = MailboxVisibility.PERSONAL
    mailbox.created_by_id = priya.pk
    await mailbox.save(update_fields=["visibility", "created_by_id"])
    return World(
        acme,
        await api_for(client, priya),
        await api_for(client, erik),
        await api_for(client, ada),
        priya.pk,
        made.account_id,
        made.contact_id,
        mailbox,
        imap,
    )


def fresh(subject: str, **options: object) -> bytes:
    """Anna's mail sent now (so its attachments are "future synced mail": auto-saved)."""
    return mail(ANNA, subject=subject, date=datetime.now(UTC), **options)  # type: ignore[arg-type]


async def seen(api: Api, account_id: str, subject: str) -> dict:
    """The message as `api`'s viewer gets it from inbox, the account's Email tab and node:
    the same in all three."""
    inbox = [e["node"] for e in (await api.data(INBOX))["inbox"]["edges"]]
    [found] = [m for m in inbox if m["subject"] == subject]
    tab = (await api.data(TAB, {"id": account_id}))["account"]["messages"]["edges"]
    [in_tab] = [e["node"] for e in tab if e["node"]["subject"] == subject]
    by_id = (await api.data(NODE, {"id": found["id"]}))["node"]
    assert found == in_tab == by_id
    return found


def hidden(message: dict) -> bool:
    """Hidden as the contract says: bodies null, no attachments; the envelope stays."""
    if message["contentHidden"]:
        assert message["textBody"] is None and message["htmlBody"] is None
        assert message["attachments"] == []
        assert message["subject"] and message["from"] and message["to"] and message["sentAt"]
        return True
    assert BODY in message["textBody"]
    assert [a["filename"] for a in message["attachments"]] == ["figures.pdf"]
    return False


async def documents(api: Api, account_id: str) -> int:
    return (await api.data(TAB, {"id": account_id}))["account"]["documents"]["totalCount"]


async def test_every_content_field_obeys_the_thread_for_each_viewer(acme, client, imap, settings):
    w = await world(acme, client, imap, settings)
    await w.receive(fresh("Private figures", body=BODY, attachments=[PDF]))
    colleagues = {"erik": w.erik, "ada": w.ada, "owner": w.owner}

    mine = await seen(w.priya, w.account_id, "Private figures")
    assert mine["private"] and not hidden(mine)
    for name, api in colleagues.items():
        theirs = await seen(api, w.account_id, "Private figures")
        assert theirs["private"] and hidden(theirs), name
        assert theirs["threadId"] == mine["threadId"] and theirs["to"] == mine["to"]
    # Not auto-saved while private: the account's Documents do not have it.
    assert await documents(w.owner, w.account_id) == 0
    assert mine["attachments"][0]["document"] is None

    shared = await w.priya.ok(SHARE, {"t": mine["threadId"]})
    assert shared == {"errors": [], "threadId": mine["threadId"], "private": False}
    for name, api in {"priya": w.priya, **colleagues}.items():
        message = await seen(api, w.account_id, "Private figures")
        assert not message["private"] and not hidden(message), name
        document = message["attachments"][0]["document"]
        assert document is not None, name
    # Shared: saved into the account's Documents, and downloadable by a colleague.
    assert await documents(w.owner, w.account_id) == 1
    url = document["downloadUrl"]
    response = await client.get(
        url[url.index("/documents/") :], headers={"Authorization": f"Bearer {w.erik.token}"}
    )
    assert response.status_code == 200 and response.content == PDF[2]

    # Unshared: private again; the document saved meanwhile stays (the client's now).
    assert (await w.priya.ok(UNSHARE, {"t": mine["threadId"]}))["private"] is True
    assert not hidden(await seen(w.priya, w.account_id, "Private figures"))
    for name, api in colleagues.items():
        assert hidden(await seen(api, w.account_id, "Private figures")), name
    assert await documents(w.owner, w.account_id) == 1


async def test_only_the_mailbox_owner_shares_and_bad_ids_are_not_found(
    acme, globex, client, imap, settings
):
    w = await world(acme, client, imap, settings)
    await w.receive(fresh("Private figures", body=BODY))
    thread = (await seen(w.priya, w.account_id, "Private figures"))["threadId"]
    for api in (w.erik, w.ada, w.owner):  # they see the thread, it is not theirs to share
        for document in (SHARE, UNSHARE):
            refused = await api.post(document, {"t": thread})
            assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # Unknown, malformed, over-long, or another firm's: NOT_FOUND, nothing shared.
    for bad in ("0" * 64, "nope", "x" * 500, ""):
        payload = (await w.priya.data(SHARE, {"t": bad}))["shareThread"]
        assert payload["errors"] == [
            {"code": "NOT_FOUND", "field": ["threadId"], "message": "No such thread."}
        ]
        assert payload["threadId"] is None and payload["private"] is None
    refused = await globex.api.data(SHARE, {"t": thread})
    assert refused["shareThread"]["errors"][0]["code"] == "NOT_FOUND"
    # Another firm reaches neither the mailbox to switch it nor the message.
    switched = await globex.api.data(VISIBILITY, {"id": w.mailbox_id, "v": "SHARED"})
    assert switched["updateMailbox"]["errors"] == [{"code": "NOT_FOUND"}]
    message_id = (await seen(w.priya, w.account_id, "Private figures"))["id"]
    assert (await globex.api.data(NODE, {"id": message_id}))["node"] is None
    # Without the inbox right, or as a client: refused before anything is looked up.
    clerk = await api_for(client, await add_staff(acme, "clerk@acme.example"))
    assert (await clerk.post(SHARE, {"t": thread}))["errors"][0]["extensions"]["code"] == (
        "FORBIDDEN"
    )
    anonymous = await Api(client).post(SHARE, {"t": thread})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert hidden(await seen(w.erik, w.account_id, "Private figures"))
    # Sharing twice (or unsharing a private thread) is no error: the state is as asked.
    for _ in range(2):
        assert (await w.priya.ok(SHARE, {"t": thread}))["private"] is False
    for _ in range(2):
        assert (await w.priya.ok(UNSHARE, {"t": thread}))["private"] is True


async def test_mail_arriving_in_a_shared_thread_stays_shared(acme, client, imap, settings):
    w = await world(acme, client, imap, settings)
    first = fresh("Figures", body=BODY, message_id="<first@client.example>")
    await w.receive(first)
    thread = (await seen(w.priya, w.account_id, "Figures"))["threadId"]
    await w.priya.ok(SHARE, {"t": thread})
    answer = fresh(
        "Re: Figures",
        body=BODY,
        attachments=[PDF],
        in_reply_to="<first@client.example>",
        references=["<first@client.example>"],
    )
    await w.receive(answer)
    other = fresh("Another matter", body=BODY)
    await w.receive(other)
    later = await seen(w.erik, w.account_id, "Re: Figures")
    assert later["threadId"] == thread and not later["private"] and not hidden(later)
    assert later["attachments"][0]["document"] is not None  # auto-saved as it was stored
    assert hidden(await seen(w.erik, w.account_id, "Another matter"))


async def test_owners_may_be_let_read_everything_by_an_owner(acme, client, imap, settings):
    w = await world(acme, client, imap, settings)
    await w.receive(fresh("Private figures", body=BODY, attachments=[PDF]))
    assert hidden(await seen(w.owner, w.account_id, "Private figures"))
    assert (await w.owner.data("{ firm { ownersSeeAllMail } }"))["firm"] == {
        "ownersSeeAllMail": False
    }
    # Only an owner changes it; an admin is refused and nothing changes.
    refused = await w.ada.post(SETTINGS, {"on": True})
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    await w.owner.data(
        'mutation { updateFirmSettings(input: {copyAddress: "archive@acme.example"}) '
        "{ errors { code } } }"
    )
    on = await w.owner.ok(SETTINGS, {"on": True})
    # Left out of the input, the copy address is kept.
    assert on["firm"] == {"ownersSeeAllMail": True, "copyAddress": "archive@acme.example"}
    assert not hidden(await seen(w.owner, w.account_id, "Private figures"))
    for api in (w.ada, w.erik):  # admins and employees still follow the rule
        assert hidden(await seen(api, w.account_id, "Private figures"))
    # Reading is not owning: the owner still cannot share it, and no document was saved.
    thread = (await seen(w.owner, w.account_id, "Private figures"))["threadId"]
    forbidden = await w.owner.post(SHARE, {"t": thread})
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert await documents(w.owner, w.account_id) == 0
    await w.owner.ok(SETTINGS, {"on": False})
    assert hidden(await seen(w.owner, w.account_id, "Private figures"))


async def test_replies_in_a_private_thread(acme, client, imap, settings):
    w = await world(acme, client, imap, settings)
    await w.receive(fresh("Private figures", body=BODY))
    message_id = (await seen(w.priya, w.account_id, "Private figures"))["id"]
    # A colleague cannot answer it: the reply would quote what they may not read.
    refused = await w.erik.post(REPLY, {"id": message_id})
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # The owner's reply is as private as the thread.
    reply = (await w.priya.ok(REPLY, {"id": message_id}))["message"]
    assert reply["private"] and not reply["contentHidden"] and "Thanks!" in reply["textBody"]
    assert hidden(await seen(w.erik, w.account_id, "Re: Private figures")) is True


async def test_switching_a_mailbox_between_shared_and_personal(acme, client, imap, settings):
    w = await world(acme, client, imap, settings)
    await w.receive(fresh("Kept private", body=BODY, attachments=[PDF]))
    await w.receive(fresh("Shared one", body=BODY, attachments=[PDF]))
    shared = (await seen(w.priya, w.account_id, "Shared one"))["threadId"]
    await w.priya.ok(SHARE, {"t": shared})
    # Only the member who connected it switches it; others are refused, nothing changes.
    for api in (w.erik, w.ada, w.owner):
        refused = await api.post(VISIBILITY, {"id": w.mailbox_id, "v": "SHARED"})
        assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert hidden(await seen(w.erik, w.account_id, "Kept private"))

    made_shared = await w.priya.ok(VISIBILITY, {"id": w.mailbox_id, "v": "SHARED"})
    assert made_shared["mailbox"] == {"visibility": "SHARED", "owner": None}
    for subject in ("Kept private", "Shared one"):
        message = await seen(w.erik, w.account_id, subject)
        assert not message["private"] and not hidden(message)

    # Back to PERSONAL: what the firm could read stays readable (not taken back by a
    # switch); mail stored from now on is private; she may unshare a thread explicitly.
    back = await w.priya.ok(VISIBILITY, {"id": w.mailbox_id, "v": "PERSONAL"})
    assert back["mailbox"] == {"visibility": "PERSONAL", "owner": {"email": "priya@acme.example"}}
    for subject in ("Kept private", "Shared one"):
        assert not hidden(await seen(w.erik, w.account_id, subject)), subject
    await w.receive(fresh("After going personal", body=BODY, attachments=[PDF]))
    assert hidden(await seen(w.erik, w.account_id, "After going personal"))
    kept = (await seen(w.priya, w.account_id, "Kept private"))["threadId"]
    assert (await w.priya.ok(UNSHARE, {"t": kept}))["private"] is True
    assert hidden(await seen(w.erik, w.account_id, "Kept private"))
    assert not hidden(await seen(w.erik, w.account_id, "Shared one"))


async def test_a_running_sync_stores_mail_as_the_mailbox_is_now(acme, client, imap, settings):
    """The sync loop (IMAP IDLE) restarts a mailbox's task when it is switched: mail arriving
    after the switch is stored private, not by the row the task started with."""
    w = await world(acme, client, imap, settings)
    await w.priya.ok(VISIBILITY, {"id": w.mailbox_id, "v": "SHARED"})
    async with running(loop_settings(settings)):

        async def idle() -> bool:
            return (await Mailbox.get(pk=w.mailbox.pk)).last_synced_at is not None

        await eventually(idle, "the first pass ran", DEADLINE)
        await w.priya.ok(VISIBILITY, {"id": w.mailbox_id, "v": "PERSONAL"})
        w.imap.append(w.mailbox.username, fresh("After the switch", body=BODY, attachments=[PDF]))

        async def stored() -> bool:
            inbox = (await w.erik.data(INBOX))["inbox"]["edges"]
            return any(e["node"]["subject"] == "After the switch" for e in inbox)

        await eventually(stored, "IDLE brought the new mail", DEADLINE)
    assert hidden(await seen(w.erik, w.account_id, "After the switch"))


async def test_connecting_a_personal_mailbox(acme, client, imap, smtp, settings):
    priya = await api_for(client, await add_staff(acme, "priya@acme.example", can_use_inbox=True))
    personal = mailbox_input(imap, smtp, imap_user("priya"), visibility="PERSONAL")
    made = await priya.ok(CONNECT, {"input": personal})
    query = "query($id: ID!) { node(id: $id) { ... on Mailbox { visibility owner { email } } } }"
    box = (await acme.api.data(query, {"id": made["mailbox"]["id"]}))["node"]
    assert box == {"visibility": "PERSONAL", "owner": {"email": "priya@acme.example"}}
    shared = await acme.api.ok(CONNECT, {"input": mailbox_input(imap, smtp, imap_user("desk"))})
    box = (await acme.api.data(query, {"id": shared["mailbox"]["id"]}))["node"]
    assert box == {"visibility": "SHARED", "owner": None}
    bad = await acme.api.post(
        CONNECT, {"input": mailbox_input(imap, smtp, imap_user("x"), visibility="SECRET")}
    )
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_hiding_adds_no_statement_per_message(acme, client, imap, settings):
    w = await world(acme, client, imap, settings)
    for n in range(3):
        await w.receive(fresh(f"Private {n}", body=BODY, attachments=[PDF]))

    async def statements(api: Api, document: str, variables: dict | None = None) -> int:
        await api.data(document, variables)  # warm: sessions, caches
        with count_sql() as sql:
            await api.data(document, variables)
        return len(sql)

    tab = {"id": w.account_id}
    hidden_inbox = await statements(w.erik, INBOX)
    hidden_tab = await statements(w.erik, TAB, tab)
    own_inbox = await statements(w.priya, INBOX)
    for n in range(3, 9):
        await w.receive(fresh(f"Private {n}", body=BODY, attachments=[PDF]))
    # Three times the mail, hidden or not: the same statements.
    assert await statements(w.erik, INBOX) == hidden_inbox
    assert await statements(w.erik, TAB, tab) == hidden_tab
    assert await statements(w.priya, INBOX) == own_inbox


async def test_a_data_export_holds_the_bodies_its_requester_may_read(acme, client, imap, settings):
    w = await world(acme, client, imap, settings)
    await w.receive(fresh("Private figures", body=BODY))

    async def exported(api: Api) -> dict:
        url = (await api.ok(EXPORT, {"id": w.contact_id}))["downloadUrl"]
        client.cookies.clear()
        response = await client.get(url[url.index("/exports/") :])
        assert response.status_code == 200, response.text
        return json.loads(zipfile.ZipFile(io.BytesIO(response.content)).read("data.json"))

    by_admin = await exported(w.ada)
    [message] = by_admin["messages"]
    assert message["subject"] == "Private figures" and message["contentHidden"] is True
    assert message["textBody"] is None and BODY not in json.dumps(by_admin)
    assert any("left out" in note and "personal mailbox" in note for note in by_admin["notes"])
    thread = (await seen(w.priya, w.account_id, "Private figures"))["threadId"]
    await w.priya.ok(SHARE, {"t": thread})
    [message] = (await exported(w.ada))["messages"]
    assert message["contentHidden"] is False and BODY in message["textBody"]


@pytest.mark.parametrize("mode", ["multiplexed", "stock"])
async def test_live_updates_hide_a_private_body_from_other_subscribers(
    acme, client, imap, settings, mode
):
    w = await world(acme, client, imap, settings)
    async with serving(settings) as live:
        fanout.registry_for(live.app.state.bus).enabled = mode == "multiplexed"
        try:
            async with (
                socket(live.url, w.priya.token) as priya,
                socket(live.url, w.erik.token) as erik,
                socket(live.url, w.ada.token) as ada,
            ):
                for sock in (priya, erik, ada):
                    await sock.subscribe("1", SYNCED)
                # Priya and Erik (one role, the same rights) share one group when multiplexed.
                await live.subscribed(w.acme.owner.firm_id, 2 if mode == "multiplexed" else 3)
                w.imap.append(w.mailbox.username, fresh("Live", body=BODY, attachments=[PDF]))
                await live.api(w.priya.token).ok(SYNC, {"id": w.mailbox_id})
                mine = await priya.event("1")
                assert mine["private"] and not mine["contentHidden"]
                assert BODY in mine["textBody"] and mine["attachments"] == [
                    {"filename": "figures.pdf"}
                ]
                for sock in (erik, ada):
                    theirs = await sock.event("1")
                    assert theirs == {
                        "subject": "Live",
                        "private": True,
                        "contentHidden": True,
                        "textBody": None,
                        "attachments": [],
                    }
                for sock in (priya, erik, ada):
                    await sock.nothing_pending()
        finally:
            fanout.registry_for(live.app.state.bus).enabled = True


NESTED = """subscription { messageSynced { subject
  accounts { messages { edges { node { subject contentHidden textBody } } } } } }"""


async def test_a_shared_live_update_never_shows_a_private_body_in_nested_lists(
    acme, client, imap, settings
):
    """Subscribers of one group share one execution: a message's accounts' messages are read
    as nobody in particular there, whichever member's context runs it."""
    w = await world(acme, client, imap, settings)
    await w.receive(fresh("Private", body=BODY))
    office = await add_mailbox(acme.owner.firm_id, imap, settings, imap_user("office"))
    async with (
        serving(settings) as live,
        socket(live.url, w.priya.token) as priya,
        socket(live.url, w.erik.token) as erik,
    ):
        for sock in (priya, erik):
            await sock.subscribe("1", NESTED)
        await live.subscribed(w.acme.owner.firm_id, 1)  # one group: one role and rights
        for n in range(3):  # each event runs in whichever member's context comes first
            w.imap.append(office.username, fresh(f"Shared {n}", body="Hello"))
            await live.api(w.priya.token).ok(SYNC, {"id": ids.encode("Mailbox", office.pk)})
            for sock in (priya, erik):
                event = await sock.event("1")
                nested = [
                    e["node"]
                    for account in event["accounts"]
                    for e in account["messages"]["edges"]
                    if e["node"]["subject"] == "Private"
                ]
                assert nested == [
                    {"subject": "Private", "contentHidden": True, "textBody": None}
                ], nested


async def test_a_colleagues_personal_mailbox_is_not_theirs_to_use(acme, client, imap, settings):
    w = await world(acme, client, imap, settings)
    await w.receive(fresh("Private", body=BODY))
    office = await add_mailbox(acme.owner.firm_id, imap, settings, imap_user("office"))
    # Shared with him, Erik may answer Priya's thread: through the firm's shared mailbox,
    # never her own (her login, her Sent folder).
    message = await seen(w.priya, w.account_id, "Private")
    assert (await w.priya.data(SHARE, {"t": message["threadId"]}))["shareThread"]["errors"] == []
    replied = (await w.erik.data(REPLY, {"id": message["id"]}))["replyToMessage"]
    assert replied["errors"] == []
    [reply] = await OutboundEmail.filter(kind="REPLY")
    assert reply.mailbox_id == office.pk
    await w.priya.ok(UNSHARE, {"t": message["threadId"]})
    # He cannot change her logins nor delete her mail; an admin may disconnect it (her mail
    # kept, still private).
    update = """mutation($id: ID!) { updateMailbox(id: $id, input: {username: "x"}) {
      errors { code } } }"""
    refused = await w.erik.post(update, {"id": w.mailbox_id})
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    wipe = """mutation($id: ID!) { disconnectMailbox(id: $id, deleteMessages: true) {
      errors { code } } }"""
    for api in (w.erik, w.ada):
        refused = await api.post(wipe, {"id": w.mailbox_id})
        assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert await Mailbox.filter(pk=w.mailbox.pk).exists()
    keep = """mutation($id: ID!) { disconnectMailbox(id: $id) { errors { code } } }"""
    assert (await w.ada.data(keep, {"id": w.mailbox_id}))["disconnectMailbox"]["errors"] == []
    assert hidden(await seen(w.erik, w.account_id, "Private"))
    assert office.visibility == MailboxVisibility.SHARED


@pytest.mark.parametrize("how", ["thread shared", "mailbox was shared"])
async def test_a_shared_mailbox_takes_over_a_readable_personal_copy(
    acme: Firm, client: httpx.AsyncClient, imap: ImapServer, settings: Settings, how: str
) -> None:
    """Shared wins also for a personal mailbox's message the firm could already read: the
    SHARED mailbox holding it takes it over, so its owner's unsharing no longer hides it."""
    w = await world(acme, client, imap, settings)
    office = await add_mailbox(acme.owner.firm_id, imap, settings, imap_user("office"))
    first = fresh("Figures", body=BODY, attachments=[PDF], message_id="<f1@client.example>")
    if how == "thread shared":
        await w.receive(first)
        thread = (await seen(w.priya, w.account_id, "Figures"))["threadId"]
        await w.priya.ok(SHARE, {"t": thread})
    else:
        await w.priya.ok(VISIBILITY, {"id": w.mailbox_id, "v": "SHARED"})
        await w.receive(first)
        thread = (await seen(w.priya, w.account_id, "Figures"))["threadId"]
        await w.priya.ok(VISIBILITY, {"id": w.mailbox_id, "v": "PERSONAL"})
    imap.append(office.username, first)  # the firm's SHARED mailbox holds the same message
    await w.priya.ok(SYNC, {"id": ids.encode("Mailbox", office.pk)})
    row = await Message.get(message_id="<f1@client.example>")
    assert (row.mailbox_id, row.private_to_id) == (office.pk, None)
    await w.priya.post(UNSHARE, {"t": thread})
    assert not hidden(await seen(w.erik, w.account_id, "Figures"))
