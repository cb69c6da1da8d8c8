"""Inbox+ through the API: mail synced from a real Dovecot, newest first, stable cursors,
sanitized HTML, and only for staff with the inbox right."""

from __future__ import annotations

import base64

from models import AccountEmail
from schema import ids
from tests.support.api import Api, add_staff, api_for
from tests.support.crm_ops import new_account
from tests.support.imap import imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import invitee
from tests.support.mail import add_mailbox, numbered

SYNC = "mutation($id: ID!) { syncMailbox(id: $id) { errors { code } mailbox { syncStatus lastError } } }"
INBOX = """query($first: Int, $after: String) { inbox(first: $first, after: $after) {
  totalCount pageInfo { hasNextPage endCursor }
  edges { node { id subject from to direction htmlBody textBody accounts { name } } } } }"""


async def test_inbox_pages_stay_stable_while_mail_arrives(acme, client, settings, imap):
    user = "office-inbox@acme.example"
    await invitee(acme.api, "Miller Family", "anna@miller.example")
    await AccountEmail.all().update(email_sync=True)
    for n in range(1, 4):
        imap.append(user, numbered(n))
    imap.append(user, numbered(4, sender="stranger@else.example"))
    imap.append(user, numbered(5, html="<p>Hi</p><script>alert(1)</script>"))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings, user)
    mailbox_id = ids.encode("Mailbox", mailbox.pk)
    synced = (await acme.api.data(SYNC, {"id": mailbox_id}))["syncMailbox"]
    assert synced == {"errors": [], "mailbox": {"syncStatus": "IDLE", "lastError": None}}

    page = (await acme.api.data(INBOX, {"first": 2}))["inbox"]
    assert page["totalCount"] == 4  # the stranger's mail is not kept
    assert [e["node"]["subject"] for e in page["edges"]] == ["Message 5", "Message 3"]
    newest = page["edges"][0]["node"]
    assert "<script>" not in newest["htmlBody"] and "<p>Hi</p>" in newest["htmlBody"]
    assert newest["accounts"] == [{"name": "Miller Family"}] and newest["direction"] == "INBOUND"

    # New mail arrives between pages: the next page neither repeats nor skips.
    imap.append(user, numbered(9))
    await acme.api.data(SYNC, {"id": mailbox_id})
    rest = (await acme.api.data(INBOX, {"first": 10, "after": page["pageInfo"]["endCursor"]}))[
        "inbox"
    ]
    assert [e["node"]["subject"] for e in rest["edges"]] == ["Message 2", "Message 1"]
    assert rest["totalCount"] == 5 and not rest["pageInfo"]["hasNextPage"]


async def test_inbox_is_for_staff_with_the_inbox_right(acme, globex, client, settings, imap):
    user = "office-rights@acme.example"
    await invitee(acme.api, "Miller Family", "anna@miller.example")
    await AccountEmail.all().update(email_sync=True)
    imap.append(user, numbered(1))
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings, user)
    mailbox_id = ids.encode("Mailbox", mailbox.pk)
    await acme.api.data(SYNC, {"id": mailbox_id})
    message_id = (await acme.api.data(INBOX))["inbox"]["edges"][0]["node"]["id"]

    reader = await api_for(client, await add_staff(acme, "reader@acme.example"))
    assert (await reader.post(INBOX))["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await reader.data("query($id: ID!) { node(id: $id) { id } }", {"id": message_id}))[
        "node"
    ] is None
    inbox_user = await api_for(
        client, await add_staff(acme, "inbox@acme.example", can_use_inbox=True)
    )
    assert (await inbox_user.data(INBOX))["inbox"]["totalCount"] == 1
    assert (await globex.api.data(INBOX))["inbox"]["totalCount"] == 0
    assert (await globex.api.data("query($id: ID!) { node(id: $id) { id } }", {"id": message_id}))[
        "node"
    ] is None
    assert (await Api(client).post(INBOX))["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    bad = await acme.api.post(INBOX, {"after": "garbage"})
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_forged_cursors_are_bad_input_on_both_databases(acme):
    """A cursor is the client's text: an id beyond the 32-bit keys or a time no database can
    convert must be refused, not handed to PostgreSQL (it answered INTERNAL)."""
    account = await new_account(acme.api, "Miller Family")
    messages = "query($id: ID!, $after: String) { account(id: $id) { messages(after: $after) { totalCount } } }"
    forged = [
        "2020-01-01T00:00:00+00:00|2147483648",
        "2020-01-01T00:00:00+00:00|-9223372036854775808",
        "2020-01-01T00:00:00+00:00|0",
        "0001-01-01T00:00:00+14:00|5",
        "9999-12-31T23:59:59-14:00|5",
        "2020-01-01T00:00:00|5",  # no time zone
    ]
    for position in forged:
        cursor = base64.urlsafe_b64encode(f"message:{position}".encode()).decode()
        for query, variables in [
            (INBOX, {"after": cursor}),
            (messages, {"id": account["id"], "after": cursor}),
        ]:
            body = await acme.api.post(query, variables)
            [error] = body["errors"]
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "after"}, (
                position,
                body,
            )
    fine = base64.urlsafe_b64encode(b"message:2020-01-01T00:00:00+00:00|5").decode()
    assert (await acme.api.data(INBOX, {"after": fine}))["inbox"]["totalCount"] == 0
