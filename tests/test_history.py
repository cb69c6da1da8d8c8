"""EMAIL SYNC history (issue 5, item 4): turning EMAIL SYNC on for an address imports its
earlier mail from every connected mailbox, in the background, with progress on the mailbox.

Against a real Dovecot (tests/support/imap.py). The mail is on the server and the mailbox synced
before EMAIL SYNC goes on, so the folder cursors are past it and only the history import can
bring it in. The background loop belongs elsewhere: these tests call
`history.run_due_imports` as one round of that loop would.
"""

from __future__ import annotations

import asyncio
import imaplib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from tortoise.queryset import UpdateQuery

from models import HistoryImport, HistoryStatus, Mailbox, Message, MessageAccount
from portico.settings import Settings
from schema import ids
from services.mail import history, sync_engine
from services.mail import imap as imap_session
from services.mail import store as message_store
from services.mail.imap import ImapSession
from services.shared import crypto
from tests.support.api import Api, Firm, add_staff, api_for
from tests.support.crm_ops import UPDATE_EMAIL, new_account, new_contact
from tests.support.imap import PASSWORD, ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import FLAGS, STATUS
from tests.support.mail import add_mailbox, mail
from tests.support.sqlcount import count_sql

JANE = "Jane.Doe@Client.example"  # as typed in the CRM; lower-cased in the mail below
BOB = "bob@client.example"
STRANGER = "someone@elsewhere.example"

SYNC = "mutation($id: ID!) { syncMailbox(id: $id) { errors { code } mailbox { syncStatus } } }"
MAILBOXES = """{ mailboxes { id address historyPending
  historyImports { address status found imported lastError createdAt finishedAt } } }"""
INBOX = "{ inbox(first: 50) { totalCount edges { node { subject accounts { name } } } } }"


@dataclass
class Office:
    firm: Firm
    user: str  # the IMAP user (and address) of the firm's mailbox
    mailbox_id: str
    family: str  # account ids
    company: str
    jane: dict[str, str]  # account name: AccountEmail id of Jane there
    bob: str  # Bob's AccountEmail id in the family account
    jane_email_id: str


def old_mail(imap: ImapServer, user: str) -> None:
    """Jane's mail through INBOX and Sent, Bob's and a stranger's: all there before EMAIL SYNC."""
    jane = JANE.lower()
    imap.append(user, mail(jane, user, "From Jane"))
    imap.append(user, mail(STRANGER, user, "Jane in copy", cc=[jane]))
    imap.append(user, mail(user, jane, "To Jane"), folder="Sent")
    imap.append(user, mail(BOB, user, "From Bob"))
    imap.append(user, mail(STRANGER, user, "From a stranger"))


async def office(firm: Firm, imap: ImapServer, settings: Settings) -> Office:
    api = firm.api
    family = (await new_account(api, "Doe Family"))["id"]
    company = (await new_account(api, "Doe Ltd", "COMPANY"))["id"]
    jane = await new_contact(api, "Jane", "Doe", [(JANE, "Email")], [family, company])
    await new_contact(api, "Bob", "Doe", [(BOB, "Email")], [family])
    rows: dict[str, str] = {}
    bob = ""
    for name, account_id in (("Doe Family", family), ("Doe Ltd", company)):
        for row in (await api.data(STATUS, {"id": account_id}))["account"]["emails"]:
            if row["emailAddress"]["address"] == JANE:
                rows[name] = row["id"]
            else:
                bob = row["id"]
    mailbox = await add_mailbox(firm.owner.firm_id, imap, settings)
    user, mailbox_id = mailbox.username, ids.encode("Mailbox", mailbox.pk)
    old_mail(imap, user)
    # Synced with EMAIL SYNC off everywhere: nothing kept, and the cursors move past it all.
    synced = (await api.data(SYNC, {"id": mailbox_id}))["syncMailbox"]
    assert synced == {"errors": [], "mailbox": {"syncStatus": "IDLE"}}
    assert (await api.data(INBOX))["inbox"]["totalCount"] == 0
    return Office(
        firm, user, mailbox_id, family, company, rows, bob, jane["emailAddresses"][0]["id"]
    )


async def email_sync(api: Api, account_email_id: str, on: bool) -> None:
    await api.ok(FLAGS, {"input": {"accountEmailId": account_email_id, "emailSync": on}})


async def imports(api: Api) -> dict[str, dict]:
    """Each mailbox (by address) with its history counters."""
    return {m["address"]: m for m in (await api.data(MAILBOXES))["mailboxes"]}


async def inbox(api: Api) -> dict[str, list[str]]:
    """Subject: account names, of everything in Inbox+."""
    edges = (await api.data(INBOX))["inbox"]["edges"]
    return {e["node"]["subject"]: sorted(a["name"] for a in e["node"]["accounts"]) for e in edges}


async def test_turning_email_sync_on_imports_the_earlier_mail(acme, settings, imap):
    o = await office(acme, imap, settings)
    api = acme.api
    await email_sync(api, o.jane["Doe Family"], True)

    [waiting] = (await imports(api))[o.user]["historyImports"]
    assert (await imports(api))[o.user]["historyPending"] == 1
    assert waiting["address"] == JANE.lower() and waiting["status"] == "PENDING"
    assert waiting["finishedAt"] is None and waiting["found"] == 0
    # The ordinary sync never sees that mail again: its cursors are past it.
    await api.data(SYNC, {"id": o.mailbox_id})
    assert (await api.data(INBOX))["inbox"]["totalCount"] == 0

    assert await history.run_due_imports(settings) == 1
    mailbox = (await imports(api))[o.user]
    [done] = mailbox["historyImports"]
    assert mailbox["historyPending"] == 0
    assert (done["status"], done["found"], done["imported"], done["lastError"]) == (
        "DONE",
        3,
        3,
        None,
    )
    assert done["finishedAt"] is not None
    family = ["Doe Family"]
    expected = {"From Jane": family, "Jane in copy": family, "To Jane": family}
    assert await inbox(api) == expected  # Bob's and the stranger's mail stay out

    # Again, and with the ordinary sync: nothing new, nothing twice.
    assert await history.run_due_imports(settings) == 0
    await api.data(SYNC, {"id": o.mailbox_id})
    assert await inbox(api) == expected
    assert await Message.all().count() == 3


async def test_a_second_account_and_a_second_toggle_link_the_same_messages(acme, settings, imap):
    o = await office(acme, imap, settings)
    api = acme.api
    await email_sync(api, o.jane["Doe Family"], True)
    await history.run_due_imports(settings)

    # The same address turned on in another account: the stored messages gain that account.
    await email_sync(api, o.jane["Doe Ltd"], True)
    assert (await imports(api))[o.user]["historyPending"] == 1
    assert await history.run_due_imports(settings) == 1
    both = ["Doe Family", "Doe Ltd"]
    assert await inbox(api) == {"From Jane": both, "Jane in copy": both, "To Jane": both}
    [latest] = (await imports(api))[o.user]["historyImports"]
    assert (latest["status"], latest["found"], latest["imported"]) == ("DONE", 3, 3)
    assert await Message.all().count() == 3 and await MessageAccount.all().count() == 6

    # Off and on again: queued again (once, however often it is flipped before it runs).
    await email_sync(api, o.jane["Doe Family"], False)
    await email_sync(api, o.jane["Doe Family"], True)
    await email_sync(api, o.jane["Doe Ltd"], False)
    await email_sync(api, o.jane["Doe Ltd"], True)
    mailbox = (await imports(api))[o.user]
    assert mailbox["historyPending"] == 1
    assert [i["status"] for i in mailbox["historyImports"]] == ["PENDING"]
    assert await HistoryImport.all().count() == 3
    assert await history.run_due_imports(settings) == 1
    [again] = (await imports(api))[o.user]["historyImports"]
    assert (again["status"], again["found"], again["imported"]) == ("DONE", 3, 0)
    assert await Message.all().count() == 3 and await MessageAccount.all().count() == 6


async def test_an_address_turned_off_before_the_import_runs_is_not_imported(acme, settings, imap):
    o = await office(acme, imap, settings)
    await email_sync(acme.api, o.jane["Doe Family"], True)
    await email_sync(acme.api, o.jane["Doe Family"], False)
    assert await history.run_due_imports(settings) == 1
    [done] = (await imports(acme.api))[o.user]["historyImports"]
    assert (done["status"], done["found"], done["imported"]) == ("DONE", 0, 0)
    assert await Message.all().count() == 0


async def test_a_changed_address_with_email_sync_on_imports_the_new_address(acme, settings, imap):
    o = await office(acme, imap, settings)
    api = acme.api
    new = "jane@newjob.example"
    imap.append(o.user, mail(new, o.user, "From the new address"))
    await api.data(SYNC, {"id": o.mailbox_id})
    await email_sync(api, o.jane["Doe Family"], True)
    assert await history.run_due_imports(settings) == 1
    await api.ok(UPDATE_EMAIL, {"id": o.jane_email_id, "address": new})
    [waiting, _] = (await imports(api))[o.user]["historyImports"]
    assert (waiting["address"], waiting["status"]) == (new, "PENDING")
    assert await history.run_due_imports(settings) == 1
    assert (await inbox(api))["From the new address"] == ["Doe Family"]


async def test_each_mailbox_of_the_firm_is_searched_once(acme, settings, imap):
    o = await office(acme, imap, settings)
    second = await add_mailbox(acme.owner.firm_id, imap, settings)
    other, other_id = second.username, ids.encode("Mailbox", second.pk)
    shared = f"<{secrets.token_hex(8)}@test>"  # one message, in both mailboxes
    for user in (o.user, other):
        imap.append(user, mail(JANE.lower(), f"{o.user}, {other}", "To both", message_id=shared))
    imap.append(other, mail(JANE.lower(), other, "Only the other"))
    await acme.api.data(SYNC, {"id": o.mailbox_id})
    await acme.api.data(SYNC, {"id": other_id})
    await email_sync(acme.api, o.jane["Doe Family"], True)
    assert await HistoryImport.all().count() == 2

    # Three processes at once: each import is claimed, and run, by exactly one.
    counts = await asyncio.gather(*(history.run_due_imports(settings) for _ in range(3)))
    assert sum(counts) == 2
    found = await imports(acme.api)
    assert [i["status"] for m in found.values() for i in m["historyImports"]] == ["DONE"] * 2
    assert (await inbox(acme.api)).keys() == {
        "From Jane",
        "Jane in copy",
        "To Jane",
        "To both",
        "Only the other",
    }
    assert await Message.all().count() == 5


async def test_a_wrong_password_fails_readably_and_stores_nothing(acme, settings, imap):
    o = await office(acme, imap, settings)
    wrong = "not-the-password-42"
    secret = crypto.fernet(settings, "mailbox-password").encrypt(wrong.encode()).decode()
    await Mailbox.filter(address=o.user).update(password_encrypted=secret)
    await email_sync(acme.api, o.jane["Doe Family"], True)

    assert await history.run_due_imports(settings) == 1
    [failed] = (await imports(acme.api))[o.user]["historyImports"]
    assert failed["status"] == "FAILED" and failed["finishedAt"] is not None
    assert "refused the username or password" in failed["lastError"]
    assert wrong not in failed["lastError"] and PASSWORD not in failed["lastError"]
    assert await Message.all().count() == 0

    # Not tried again while the mailbox cannot log in (that could lock the mailbox) ...
    history_retry = history.RETRY_AFTER
    try:
        history.RETRY_AFTER = timedelta(0)
        assert await history.run_due_imports(settings) == 0
        await acme.api.data(SYNC, {"id": o.mailbox_id})
        assert await history.run_due_imports(settings) == 0
        # ... but once it syncs again (the password fixed), the import runs again.
        good = crypto.fernet(settings, "mailbox-password").encrypt(PASSWORD.encode()).decode()
        await Mailbox.filter(address=o.user).update(password_encrypted=good)
        await acme.api.data(SYNC, {"id": o.mailbox_id})
        assert await history.run_due_imports(settings) == 1
    finally:
        history.RETRY_AFTER = history_retry
    [done] = (await imports(acme.api))[o.user]["historyImports"]
    assert (done["status"], done["imported"], done["lastError"]) == ("DONE", 3, None)


async def test_an_import_left_by_a_dead_process_runs_again(acme, settings, imap):
    o = await office(acme, imap, settings)
    await email_sync(acme.api, o.jane["Doe Family"], True)
    stop = asyncio.Event()
    stop.set()
    assert await history.run_due_imports(settings, stop=stop) == 0  # stopped: claims nothing
    # Claimed by a process that died: its lease still runs, then runs out.
    soon = datetime.now(UTC) + timedelta(minutes=5)
    await HistoryImport.all().update(status=HistoryStatus.RUNNING, lease_until=soon)
    assert await history.run_due_imports(settings) == 0
    await HistoryImport.all().update(lease_until=datetime.now(UTC) - timedelta(seconds=1))
    assert await history.run_due_imports(settings) == 1
    assert [i["status"] for i in (await imports(acme.api))[o.user]["historyImports"]] == ["DONE"]
    assert await Message.all().count() == 3


async def test_progress_is_for_staff_with_the_inbox_right_and_batched(acme, client, settings, imap):
    o = await office(acme, imap, settings)
    for _ in range(3):
        await add_mailbox(acme.owner.firm_id, imap, settings)
    await email_sync(acme.api, o.jane["Doe Family"], True)
    await email_sync(acme.api, o.bob, True)
    with count_sql() as plain:
        await acme.api.data("{ mailboxes { id } }")
    with count_sql() as statements:
        found = await imports(acme.api)
    assert [m["historyPending"] for m in found.values()] == [2] * 4
    assert all(len(m["historyImports"]) == 2 for m in found.values())
    # The latest ids, their rows, the counts: for all four mailboxes at once.
    assert len(statements) == len(plain) + 3, statements

    reader = await api_for(client, await add_staff(acme, "reader@acme.example"))
    denied = await reader.post(MAILBOXES)
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    bad = await acme.api.post("{ mailboxes { historyImports(first: 1000) { status } } }")
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize("first", [0, 1])
async def test_history_imports_can_be_limited(acme, settings, imap, first):
    o = await office(acme, imap, settings)
    await email_sync(acme.api, o.jane["Doe Family"], True)
    await email_sync(acme.api, o.bob, True)
    query = "query($n: Int!) { mailboxes { historyImports(first: $n) { address } } }"
    [mailbox] = (await acme.api.data(query, {"n": first}))["mailboxes"]
    assert [i["address"] for i in mailbox["historyImports"]] == [BOB][:first]


async def test_several_addresses_of_one_mailbox_share_one_login(acme, settings, imap):
    o = await office(acme, imap, settings)
    await email_sync(acme.api, o.jane["Doe Family"], True)
    await email_sync(acme.api, o.bob, True)
    log = imap.folder / "dovecot.log"
    logins = log.read_text().count(f"Login: user=<{o.user}>")
    assert await history.run_due_imports(settings) == 2
    assert log.read_text().count(f"Login: user=<{o.user}>") == logins + 1
    found = {i["address"]: i for i in (await imports(acme.api))[o.user]["historyImports"]}
    # Found: what the one search matched; imported: each address's own messages.
    assert {a: (i["status"], i["found"], i["imported"]) for a, i in found.items()} == {
        JANE.lower(): ("DONE", 4, 3),
        BOB: ("DONE", 4, 1),
    }
    assert (await inbox(acme.api))["From Bob"] == ["Doe Family"]


async def office_with_old_mail(
    acme: Firm, imap: ImapServer, settings: Settings, count: int
) -> Office:
    """The office with `count` old letters from Jane in its mailbox, synced; then EMAIL SYNC
    is turned on for her, and her history import waits."""
    o = await office(acme, imap, settings)
    with imaplib.IMAP4(imap.host, imap.port) as server:
        server.login(o.user, PASSWORD)
        for n in range(count):
            raw = mail(JANE.lower(), o.user, f"Old {n}")
            server.append("INBOX", "", imaplib.Time2Internaldate(time.time()), raw)
        server.logout()
    await acme.api.data(SYNC, {"id": o.mailbox_id})
    await email_sync(acme.api, o.jane["Doe Family"], True)
    return o


async def test_a_round_cancelled_as_it_renews_its_lease_puts_the_import_back(
    acme, settings, imap, monkeypatch
):
    """The worker stops (cancels the round) just as a lease renewal was written, before it
    returned: the rows hold the new value, and the release must still find them, so the
    import waits PENDING for the next round, not RUNNING until the lease runs out."""
    o = await office_with_old_mail(acme, imap, settings, 80)  # INBOX, then Sent: renewals

    renewed = asyncio.Event()
    execute = UpdateQuery._execute

    async def held_after_renewal(query: UpdateQuery) -> int:
        updated = await execute(query)
        if query.model is HistoryImport and "found" in query.update_kwargs:
            renewed.set()
            await asyncio.Event().wait()  # written; the round is cancelled before it returns
        return updated

    monkeypatch.setattr(UpdateQuery, "_execute", held_after_renewal)
    round_ = asyncio.create_task(history.run_due_imports(settings))
    await asyncio.wait_for(renewed.wait(), 30)
    round_.cancel()
    with pytest.raises(asyncio.CancelledError):
        await round_
    monkeypatch.setattr(UpdateQuery, "_execute", execute)
    [waiting] = await HistoryImport.all()
    assert (waiting.status, waiting.lease_until) == (HistoryStatus.PENDING, None)
    assert await history.run_due_imports(settings) == 1
    [done] = (await imports(acme.api))[o.user]["historyImports"]
    assert done["status"] == "DONE"


async def test_a_stopped_round_leaves_the_import_for_the_next(acme, settings, imap, monkeypatch):
    o = await office_with_old_mail(acme, imap, settings, 120)  # 122 in INBOX, 1 in Sent

    stop = asyncio.Event()
    store = message_store.store_messages

    async def store_then_stop(*args, **kwargs):
        stored = await store(*args, **kwargs)
        stop.set()  # the first batch is stored: stop the round there
        return stored

    monkeypatch.setattr(message_store, "store_messages", store_then_stop)
    assert await history.run_due_imports(settings, stop) == 0
    monkeypatch.setattr(message_store, "store_messages", store)
    [waiting] = await HistoryImport.all()
    assert (waiting.status, waiting.lease_until) == (HistoryStatus.PENDING, None)
    assert 0 < await Message.all().count() < 123

    assert await history.run_due_imports(settings) == 1
    [done] = (await imports(acme.api))[o.user]["historyImports"]
    assert (done["status"], done["found"], done["imported"]) == ("DONE", 123, 123)
    assert await Message.all().count() == 123


async def test_progress_is_shown_while_the_import_runs(acme, settings, imap, monkeypatch):
    """As each batch is stored, the mailbox shows the imports RUNNING with what the run
    found and what each address has imported so far, growing batch by batch."""
    o = await office_with_old_mail(acme, imap, settings, 120)  # Jane: 122 in INBOX, 1 in Sent
    await email_sync(acme.api, o.bob, True)  # Bob: 1 in INBOX, among Jane's first letters
    monkeypatch.setattr(sync_engine, "FETCH_BATCH", 50)
    store = message_store.store_messages
    seen: list[dict[str, tuple[str, int, int]]] = []

    async def watched(*args, **kwargs):
        rows = (await imports(acme.api))[o.user]["historyImports"]
        seen.append({i["address"]: (i["status"], i["found"], i["imported"]) for i in rows})
        return await store(*args, **kwargs)

    monkeypatch.setattr(message_store, "store_messages", watched)
    assert await history.run_due_imports(settings) == 2
    jane = JANE.lower()
    # INBOX's 123 in batches of 50, 50 and 23, then Sent's 1: found is shown from the start.
    assert seen == [
        {jane: ("RUNNING", 123, 0), BOB: ("RUNNING", 123, 0)},
        {jane: ("RUNNING", 123, 49), BOB: ("RUNNING", 123, 1)},
        {jane: ("RUNNING", 123, 99), BOB: ("RUNNING", 123, 1)},
        {jane: ("RUNNING", 124, 122), BOB: ("RUNNING", 124, 1)},
    ]
    done = {i["address"]: i for i in (await imports(acme.api))[o.user]["historyImports"]}
    assert {a: (i["status"], i["found"], i["imported"]) for a, i in done.items()} == {
        jane: ("DONE", 124, 123),
        BOB: ("DONE", 124, 1),
    }


# Non-ASCII addresses (issue 14) -------------------------------------------------------------

JUERGEN = "jürgen@müller.example"


async def with_juergen(acme, imap, settings) -> tuple[Office, str]:
    """The office, and Jürgen (a non-ASCII address) in the family account with his old mail
    in INBOX (8-bit headers, as SMTPUTF8 mail arrives); his AccountEmail id there."""
    o = await office(acme, imap, settings)
    await new_contact(acme.api, "Jürgen", "Müller", [(JUERGEN, "Email")], [o.family])
    emails = (await acme.api.data(STATUS, {"id": o.family}))["account"]["emails"]
    [row] = [e for e in emails if e["emailAddress"]["address"] == JUERGEN]
    raw = (
        f"From: Jürgen Müller <{JUERGEN}>\r\nTo: {o.user}\r\nSubject: Grüße\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@müller.example>\r\n"
        "Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "\r\nHallo!\r\n"
    ).encode()
    imap.append(o.user, raw)
    await acme.api.data(SYNC, {"id": o.mailbox_id})  # the cursor moves past it
    return o, row["id"]


async def test_a_non_ascii_address_is_searched_with_charset_utf8(acme, settings, imap):
    from tests.support.imap_proxy import imap_proxy

    o, juergen = await with_juergen(acme, imap, settings)
    await email_sync(acme.api, juergen, True)
    async with imap_proxy(imap.host, imap.port) as proxy:  # to see what goes on the wire
        await Mailbox.all().update(imap_host=proxy.host, imap_port=proxy.port)
        assert await history.run_due_imports(settings) == 1
    # Dovecot would read the 8-bit string without CHARSET too; a strict server would not.
    searches = [line for line in proxy.sent_lines if b" SEARCH " in line]
    assert any(b"SEARCH CHARSET UTF-8 (OR (OR (FROM " in line for line in searches)
    assert all(JUERGEN.encode() in line for line in searches)
    [done] = (await imports(acme.api))[o.user]["historyImports"]
    assert (done["address"], done["status"], done["lastError"]) == (JUERGEN, "DONE", None)
    assert (done["found"], done["imported"]) == (1, 1)
    assert (await inbox(acme.api))["Grüße"] == ["Doe Family"]


async def test_a_group_search_finds_what_one_search_per_address_finds(
    acme, settings, imap, monkeypatch
):
    """Up to SEARCH_GROUP addresses are searched in one SEARCH (ORs in a balanced tree):
    the same UIDs as one SEARCH for each address, the way it was done before."""
    o, _ = await with_juergen(acme, imap, settings)
    mailbox = await Mailbox.get(username=o.user)
    addresses = [JANE.lower(), BOB, JUERGEN, "nobody@nowhere.example"]
    found: dict[int, list[int]] = {}
    for group in (25, 2, 1):
        monkeypatch.setattr(imap_session, "SEARCH_GROUP", group)
        session = await ImapSession.open(mailbox, PASSWORD, settings)
        try:
            await session.select("INBOX")
            searched = await session.search_participants(addresses)
        finally:
            await session.close()
        assert searched.refused == {}
        found[group] = searched.uids
    assert found[25] == found[2] == found[1] and len(found[1]) == 4  # not the stranger's own


def test_search_groups_keep_every_address_once_within_both_limits():
    long = [f"{'x' * 230}{n}@example.com" for n in range(12)]
    short = [f"c{n}@clients.example" for n in range(30)]
    wide = [JUERGEN, "zoë@müller.example"]
    groups = imap_session._search_groups([*long, *wide, *short])
    assert sorted(a for group, _ in groups for a in group) == sorted([*long, *wide, *short])
    for group, charset in groups:
        assert len(group) <= imap_session.SEARCH_GROUP
        assert sum(len(a.encode()) for a in group) <= imap_session.SEARCH_GROUP_BYTES
        assert charset == (None if all(a.isascii() for a in group) else "UTF-8")
        # The whole command line, tag and all, stays within what servers must take.
        line = f"A0001 UID SEARCH CHARSET UTF-8 {imap_session._any_participant(group)}\r\n"
        assert len(line.encode()) <= 8192
    assert [len(group) for group, _ in groups] == [8, 4 + 21, 9, 2]


async def test_a_refused_group_search_is_searched_again_address_by_address(acme, settings, imap):
    """The server refuses the SEARCH of a group (here because of Bob's part of it): each
    address is searched alone, so Jane's import is done and Bob's alone fails."""
    from tests.support.imap_proxy import imap_proxy

    o = await office(acme, imap, settings)
    await email_sync(acme.api, o.jane["Doe Family"], True)
    await email_sync(acme.api, o.bob, True)
    async with imap_proxy(imap.host, imap.port) as proxy:
        proxy.rewrite = [(f'(FROM "{BOB}")'.encode(), f'(FROM "{BOB}" NOSUCHKEY)'.encode())]
        await Mailbox.all().update(imap_host=proxy.host, imap_port=proxy.port)
        assert await history.run_due_imports(settings) == 2
    searches = [line for line in proxy.sent_lines if b" SEARCH " in line]
    both = [line for line in searches if BOB.encode() in line and JANE.lower().encode() in line]
    assert both and len(searches) == 2 * 3  # INBOX and Sent: both at once, then each alone
    found = {i["address"]: i for i in (await imports(acme.api))[o.user]["historyImports"]}
    assert (found[JANE.lower()]["status"], found[JANE.lower()]["imported"]) == ("DONE", 3)
    assert found[BOB]["status"] == "FAILED"
    assert f"refused to search for {BOB}" in found[BOB]["lastError"]
    assert set(await inbox(acme.api)) == {"From Jane", "Jane in copy", "To Jane"}


async def test_an_address_the_server_refuses_to_search_fails_alone(acme, settings, imap):
    from tests.support.imap_proxy import imap_proxy

    o, juergen = await with_juergen(acme, imap, settings)
    await email_sync(acme.api, juergen, True)
    await email_sync(acme.api, o.jane["Doe Family"], True)
    async with imap_proxy(imap.host, imap.port) as proxy:
        # A server without UTF-8 search: Dovecot answers NO [BADCHARSET] to a charset it
        # does not know, as such a server does to UTF-8.
        proxy.rewrite = [(b"CHARSET UTF-8", b"CHARSET X-NO-SUCH")]
        await Mailbox.all().update(imap_host=proxy.host, imap_port=proxy.port)
        assert await history.run_due_imports(settings) == 2
    found = {i["address"]: i for i in (await imports(acme.api))[o.user]["historyImports"]}
    assert (found[JANE.lower()]["status"], found[JANE.lower()]["lastError"]) == ("DONE", None)
    assert found[JANE.lower()]["imported"] == 3
    refused = found[JUERGEN]
    assert refused["status"] == "FAILED" and refused["imported"] == 0
    assert refused["lastError"].startswith(f"The IMAP server {proxy.host}:{proxy.port} refused")
    assert (
        f"to search for {JUERGEN}" in refused["lastError"] and "BADCHARSET" in refused["lastError"]
    )
    assert "Grüße" not in await inbox(acme.api) and "From Jane" in await inbox(acme.api)
