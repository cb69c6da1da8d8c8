"""Every mutation checks all its input before it writes: a mutation that answers an error has
written nothing (no row, no audit entry, no queued mail, no file). Each test sends input that
is good up to its LAST part, which is bad, and compares every table and the files folder
before and after. The last part of a mutation's input is often its payload's selection: it
is resolved after the writes, so its arguments and permissions are checked first."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from graphql import GraphQLEnumType, GraphQLObjectType, get_nullable_type
from tortoise import Tortoise

from models import Message, MessageAccount, PortalAccess, StaffRole
from portico.settings import Settings
from resolvers.mutations.selection import ARGUMENT_CHECKS, ChecksSelection
from resolvers.root import Mutation, build_schema
from schema import ids
from tests.conftest import TABLES
from tests.support.api import Api, Firm, add_staff, api_for
from tests.support.crm_ops import (
    ADD_EMAIL,
    CREATE_ACCOUNT,
    CREATE_CONTACT,
    LINK,
    UNLINK,
    UPDATE_ACCOUNT,
    UPDATE_EMAIL,
    new_account,
    new_contact,
)
from tests.support.login import (
    ACCEPT,
    FLAGS,
    RESEND,
    deliver,
    invitee,
    login_on,
    portal_token,
    token_in,
)
from tests.support.mail import Endpoint, add_mailbox, mailbox_input
from tests.support.smtp import SmtpServer, smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.support.staff_ops import ADD, UPDATE
from tests.test_documents import PDF, upload

BAD_PAGE = "documents(first: 101) { totalCount }"  # the page limit is 100


async def snapshot(settings: Settings) -> dict[str, Any]:
    """Every row of every table, and the files folder's contents."""
    conn = Tortoise.get_connection("default")
    state: dict[str, Any] = {}
    for table in TABLES:
        rows = await conn.execute_query_dict(f'SELECT * FROM "{table}"')
        state[table] = sorted(repr(sorted(row.items())) for row in rows)
    folder = settings.resolved_files_dir
    state["files"] = (
        sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        if folder.exists()
        else []
    )
    return state


@asynccontextmanager
async def unchanged(settings: Settings) -> AsyncIterator[None]:
    before = await snapshot(settings)
    yield
    after = await snapshot(settings)
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, changed


def payload_error(data: dict[str, Any]) -> str:
    """The single payload's one error code."""
    [payload] = data.values()
    [error] = payload["errors"]
    return error["code"]


def top_error(body: dict[str, Any]) -> str:
    """The code of the request's one top-level error; the mutation answered no data."""
    assert body.get("data") is None, body
    [error] = body["errors"]
    return error["extensions"]["code"]


# Finding 10b: createAccount with a bad nested argument ----------------------------------------


CREATE_ACCOUNT_WITH = """mutation($input: CreateAccountInput!) {
  createAccount(input: $input) { errors { code } account { id name NESTED } } }"""
# A bad argument inside a fragment, spread twice (each fragment is checked once).
IN_FRAGMENT = (  # the document's own closing braces end the fragment
    "...F ...F } } } fragment F on Account { emails { account { documents(first: -5) { totalCount }"
)


@pytest.mark.parametrize(
    "nested",
    [
        "documents(first: -1) { totalCount }",
        "documents(first: 100000) { totalCount }",
        'documents(after: "bm90IGEgY3Vyc29y") { totalCount }',
        "deliveries(first: 101) { totalCount }",
        'messages(first: 5, after: "nope") { totalCount }',
        IN_FRAGMENT,
    ],
)
async def test_create_account_with_a_bad_nested_argument_creates_nothing(
    acme: Firm, settings: Settings, nested: str
) -> None:
    variables = {"input": {"name": "Miller Family", "type": "FAMILY"}}
    async with unchanged(settings):
        body = await acme.api.post(CREATE_ACCOUNT_WITH.replace("NESTED", nested), variables)
    assert top_error(body) == "BAD_USER_INPUT"
    # The retry without the mistake makes the one account.
    await acme.api.ok(CREATE_ACCOUNT, variables)
    assert (await acme.api.data("{ accounts { totalCount } }"))["accounts"]["totalCount"] == 1


async def test_create_account_selecting_what_the_viewer_may_not_read_creates_nothing(
    acme: Firm, client: httpx.AsyncClient, settings: Settings
) -> None:
    clerk = await api_for(
        client, await add_staff(acme, "clerk@acme.example", can_manage_accounts=True)
    )
    variables = {"input": {"name": "Miller Family", "type": "FAMILY"}}
    async with unchanged(settings):
        body = await clerk.post(
            CREATE_ACCOUNT_WITH.replace("NESTED", "messages { totalCount }"), variables
        )
    assert top_error(body) == "FORBIDDEN"  # the Email tab needs the inbox right


async def test_a_skipped_or_good_nested_selection_is_no_error(acme: Firm) -> None:
    query = CREATE_ACCOUNT_WITH.replace(
        "NESTED",
        "documents(first: 0) { totalCount } skipped: documents(first: -1) @skip(if: true) "
        "{ totalCount }",
    )
    data = await acme.api.data(query, {"input": {"name": "Miller Family", "type": "FAMILY"}})
    assert data["createAccount"]["account"]["documents"] == {"totalCount": 0}


# CRM -----------------------------------------------------------------------------------------


async def test_update_account(acme: Firm, settings: Settings) -> None:
    account = await new_account(acme.api, "Miller Family")
    bad = {"type": "COMPANY", "autoSaveAttachments": True, "name": "x" * 201}
    async with unchanged(settings):
        data = await acme.api.data(UPDATE_ACCOUNT, {"id": account["id"], "input": bad})
    assert payload_error(data) == "INVALID_NAME"


async def test_update_account_with_a_bad_nested_argument(acme: Firm, settings: Settings) -> None:
    account = await new_account(acme.api, "Miller Family")
    query = """mutation($id: ID!) { updateAccount(id: $id, input: {type: COMPANY}) {
      errors { code } account { type NESTED } } }""".replace("NESTED", BAD_PAGE)
    async with unchanged(settings):
        body = await acme.api.post(query, {"id": account["id"]})
    assert top_error(body) == "BAD_USER_INPUT"


def _other_type_id(account_id: str) -> str:
    return ids.encode("Contact", ids.decode(account_id, "Account") or 0)


@pytest.mark.parametrize(
    "last_id",
    [
        "not-an-id",
        "other type",
        "other firm",
        ids.encode("Account", 2**31),
        ids.encode("Account", 2**40),
    ],
)
async def test_create_contact_with_a_bad_last_account_id(
    acme: Firm, globex: Firm, settings: Settings, last_id: str
) -> None:
    good = await new_account(acme.api, "Miller Family")
    if last_id == "other type":
        last_id = _other_type_id(good["id"])
    elif last_id == "other firm":
        last_id = (await new_account(globex.api, "Theirs"))["id"]
    variables = {
        "input": {
            "firstName": "Anna",
            "lastName": "Miller",
            "emails": [{"address": "anna@miller.example", "label": "Email"}],
            "accountIds": [good["id"], last_id],
        }
    }
    async with unchanged(settings):
        data = await acme.api.data(CREATE_CONTACT, variables)
    assert data["createContact"]["errors"] == [
        {
            "code": "NOT_FOUND",
            "field": ["input", "accountIds", "1"],
            "message": data["createContact"]["errors"][0]["message"],
        }
    ]


async def test_create_contact_with_too_many_accounts_or_addresses(
    acme: Firm, settings: Settings
) -> None:
    good = (await new_account(acme.api, "Miller Family"))["id"]
    variables = {"input": {"firstName": "Anna", "lastName": "Miller", "accountIds": [good] * 101}}
    async with unchanged(settings):
        data = await acme.api.data(CREATE_CONTACT, variables)
    assert payload_error(data) == "TOO_MANY"
    emails = [{"address": f"anna{i}@miller.example", "label": "Email"} for i in range(21)]
    variables = {"input": {"firstName": "Anna", "lastName": "Miller", "emails": emails}}
    async with unchanged(settings):
        data = await acme.api.data(CREATE_CONTACT, variables)
    assert payload_error(data) == "TOO_MANY"


@pytest.mark.parametrize(
    ("last", "code"),
    [
        ({"address": "not an address", "label": "Email"}, "INVALID_EMAIL"),
        ({"address": "ben@miller.example", "label": "x" * 101}, "INVALID_LABEL"),
        ({"address": "Anna@Miller.example", "label": "Work"}, "EMAIL_TAKEN"),  # given twice
        ({"address": "taken@miller.example", "label": "Work"}, "EMAIL_TAKEN"),  # another's
    ],
)
async def test_create_contact_with_a_bad_last_address(
    acme: Firm, settings: Settings, last: dict[str, str], code: str
) -> None:
    await new_contact(acme.api, "Tom", "Taken", [("taken@miller.example", "Email")])
    account = (await new_account(acme.api, "Miller Family"))["id"]
    emails = [{"address": "anna@miller.example", "label": "Email"}, last]
    variables = {
        "input": {
            "firstName": "Anna",
            "lastName": "Miller",
            "emails": emails,
            "accountIds": [account],
        }
    }
    async with unchanged(settings):
        data = await acme.api.data(CREATE_CONTACT, variables)
    assert payload_error(data) == code


async def test_create_contact_with_a_bad_nested_argument(acme: Firm, settings: Settings) -> None:
    account = (await new_account(acme.api, "Miller Family"))["id"]
    query = """mutation($input: CreateContactInput!) { createContact(input: $input) {
      errors { code } contact { id accounts { name NESTED } } } }""".replace("NESTED", BAD_PAGE)
    variables = {"input": {"firstName": "Anna", "lastName": "Miller", "accountIds": [account]}}
    async with unchanged(settings):
        body = await acme.api.post(query, variables)
    assert top_error(body) == "BAD_USER_INPUT"


async def test_link_contact(acme: Firm, globex: Firm, settings: Settings) -> None:
    account = (await new_account(acme.api, "Miller Family"))["id"]
    theirs = (await new_contact(globex.api, "Ben", "Other", [("ben@other.example", "Email")]))["id"]
    async with unchanged(settings):
        data = await acme.api.data(LINK, {"a": account, "c": theirs})
    assert payload_error(data) == "NOT_FOUND"


async def test_link_contact_with_a_bad_nested_argument(acme: Firm, settings: Settings) -> None:
    account = (await new_account(acme.api, "Miller Family"))["id"]
    anna = (await new_contact(acme.api, "Anna", "Miller", [("anna@miller.example", "Email")]))["id"]
    query = """mutation($a: ID!, $c: ID!) { linkContact(accountId: $a, contactId: $c) {
      errors { code } account { id NESTED } } }""".replace("NESTED", BAD_PAGE)
    async with unchanged(settings):
        body = await acme.api.post(query, {"a": account, "c": anna})
    assert top_error(body) == "BAD_USER_INPUT"


async def test_unlink_contact(acme: Firm, settings: Settings) -> None:
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)  # a pending invitation the unlink would revoke
    other = (await new_account(acme.api, "Other"))["id"]
    async with unchanged(settings):
        data = await acme.api.data(UNLINK, {"a": other, "c": anna.contact_id})
    assert payload_error(data) == "NOT_LINKED"
    query = """mutation($a: ID!, $c: ID!) { unlinkContact(accountId: $a, contactId: $c) {
      errors { code } account { id NESTED } } }""".replace("NESTED", BAD_PAGE)
    async with unchanged(settings):
        body = await acme.api.post(query, {"a": anna.account_id, "c": anna.contact_id})
    assert top_error(body) == "BAD_USER_INPUT"


async def test_add_email_address(acme: Firm, settings: Settings) -> None:
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    email = {"address": "anna@work.example", "label": "x" * 101}
    async with unchanged(settings):
        data = await acme.api.data(ADD_EMAIL, {"c": anna.contact_id, "email": email})
    assert payload_error(data) == "INVALID_LABEL"


async def test_update_email_address(acme: Firm, settings: Settings) -> None:
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)  # a new address would revoke and re-invite
    variables = {"id": anna.email_id, "address": "anna@new.example", "label": "x" * 101}
    async with unchanged(settings):
        data = await acme.api.data(UPDATE_EMAIL, variables)
    assert payload_error(data) == "INVALID_LABEL"


async def test_remove_email_address_with_a_bad_nested_argument(
    acme: Firm, settings: Settings
) -> None:
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    query = """mutation($id: ID!) { removeEmailAddress(id: $id) {
      errors { code } emailAddress { contact { accounts { NESTED } } } } }""".replace(
        "NESTED", BAD_PAGE
    )
    async with unchanged(settings):
        body = await acme.api.post(query, {"id": anna.email_id})
    assert top_error(body) == "BAD_USER_INPUT"


async def test_import_contacts_with_a_broken_last_line(acme: Firm, settings: Settings) -> None:
    csv = (
        "first_name,last_name,email,account\n"
        "Anna,Miller,anna@miller.example,Miller Family\n"
        'Ben,Miller,ben@miller.example,"Miller Family\n'  # the quote never closes
    )
    query = """mutation($csv: String!) { importContacts(csv: $csv) {
      errors { code } created updated rejectedRows } }"""
    async with unchanged(settings):
        data = await acme.api.data(query, {"csv": csv})
    assert payload_error(data) == "INVALID_CSV"
    assert data["importContacts"]["created"] == 0


# LOGIN and NOTIFY ----------------------------------------------------------------------------


async def test_set_email_flags_with_a_bad_nested_argument(acme: Firm, settings: Settings) -> None:
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    query = """mutation($input: SetEmailFlagsInput!) { setEmailFlags(input: $input) {
      errors { code } accountEmail { login account { NESTED } } } }""".replace("NESTED", BAD_PAGE)
    flags = {
        "accountEmailId": anna.account_email_id,
        "login": True,
        "notify": True,
        "emailSync": True,
    }
    async with unchanged(settings):  # no flag, invitation, mail, history import or audit entry
        body = await acme.api.post(query, {"input": flags})
    assert top_error(body) == "BAD_USER_INPUT"


async def test_resend_invitation(acme: Firm, settings: Settings) -> None:
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    async with unchanged(settings):
        data = await acme.api.data(RESEND, {"id": anna.account_email_id})
    assert payload_error(data) == "LOGIN_OFF"
    await login_on(acme.api, anna.account_email_id)
    query = """mutation($id: ID!) { resendInvitation(accountEmailId: $id) {
      errors { code } invitation { id account { NESTED } } } }""".replace("NESTED", BAD_PAGE)
    async with unchanged(settings):  # the pending invitation lives on, no new one, no mail
        body = await acme.api.post(query, {"id": anna.account_email_id})
    assert top_error(body) == "BAD_USER_INPUT"


async def test_remove_portal_access_with_a_bad_nested_argument(
    acme: Firm, settings: Settings
) -> None:
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await portal_token(acme, anna.account_id)  # Anna may enter the account
    access = await PortalAccess.get(account_id=ids.decode(anna.account_id, "Account"))
    portal_access_id = ids.encode("PortalAccess", access.pk)
    query = """mutation($id: ID!) { removePortalAccess(portalAccessId: $id) {
      errors { code } account { NESTED } } }""".replace("NESTED", BAD_PAGE)
    async with unchanged(settings):
        body = await acme.api.post(query, {"id": portal_access_id})
    assert top_error(body) == "BAD_USER_INPUT"


async def test_set_notification_preferences_with_a_bad_nested_argument(
    acme: Firm, settings: Settings
) -> None:
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    query = """mutation($input: NotificationPreferencesInput!) {
      setNotificationPreferences(input: $input) {
        errors { code } accountEmail { account { NESTED } } } }""".replace("NESTED", BAD_PAGE)
    choice = {
        "accountEmailId": anna.account_email_id,
        "all": False,
        "enabled": ["DOCUMENT_UPLOADS"],
    }
    async with unchanged(settings):
        body = await acme.api.post(query, {"input": choice})
    assert top_error(body) == "BAD_USER_INPUT"


SEND = """mutation($input: SendFirmEmailInput!) { sendFirmEmail(input: $input) {
  errors { code field } queued } }"""
EVENT = """mutation($input: ClientEventInput!) { notifyClientEvent(input: $input) {
  errors { code field } queued } }"""


async def test_send_firm_email_with_a_bad_last_account(
    acme: Firm, globex: Firm, settings: Settings
) -> None:
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    theirs = (await new_account(globex.api, "Theirs"))["id"]
    message = {"accountIds": [anna.account_id, theirs], "subject": "News", "body": "Hello"}
    async with unchanged(settings):
        data = await acme.api.data(SEND, {"input": message})
    assert data["sendFirmEmail"] == {
        "errors": [{"code": "NOT_FOUND", "field": ["input", "accountIds", "1"]}],
        "queued": 0,
    }


async def test_notify_client_event_with_a_bad_link(acme: Firm, settings: Settings) -> None:
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id, send=False)  # a banner would invite
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    event = {
        "accountId": anna.account_id,
        "category": "DOCUMENT_UPLOADS",
        "title": "New papers",
        "body": "See the portal.",
        "link": "javascript:alert(1)",
    }
    async with unchanged(settings):
        data = await acme.api.data(EVENT, {"input": event})
    assert payload_error(data) == "INVALID_LINK"


async def test_update_firm_settings_with_a_bad_address(acme: Firm, settings: Settings) -> None:
    query = """mutation($input: FirmSettingsInput!) { updateFirmSettings(input: $input) {
      errors { code } firm { copyAddress } } }"""
    await acme.api.ok(query, {"input": {"copyAddress": "copies@acme.example"}})
    async with unchanged(settings):
        data = await acme.api.data(query, {"input": {"copyAddress": "not an address"}})
    assert payload_error(data) == "INVALID_EMAIL"


# Staff ---------------------------------------------------------------------------------------


async def test_add_staff_member_with_a_role_the_admin_may_not_grant(
    acme: Firm, client: httpx.AsyncClient, settings: Settings
) -> None:
    admin = await api_for(client, await add_staff(acme, "admin@acme.example", StaffRole.ADMIN))
    member = {"email": "new@acme.example", "name": "New", "canUseInbox": True, "role": "OWNER"}
    async with unchanged(settings):  # no member, no password link, no mail
        body = await admin.post(ADD, {"input": member})
    assert top_error(body) == "FORBIDDEN"
    member = {"email": "new@acme.example", "name": "x" * 201, "role": "EMPLOYEE"}
    async with unchanged(settings):
        data = await acme.api.data(ADD, {"input": member})
    assert payload_error(data) == "INVALID_NAME"


async def test_update_staff_member_demoting_the_last_owner(acme: Firm, settings: Settings) -> None:
    owner = ids.encode("StaffMember", acme.owner.pk)
    changes = {"name": "Renamed", "canUseInbox": False, "active": False, "role": "ADMIN"}
    async with unchanged(settings):  # not renamed, no session ended
        data = await acme.api.data(UPDATE, {"id": owner, "input": changes})
    assert payload_error(data) == "LAST_OWNER"


# Documents -----------------------------------------------------------------------------------


async def test_upload_document(acme: Firm, client: httpx.AsyncClient, settings: Settings) -> None:
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    settings.max_upload_bytes = 100  # the app shares this settings object
    async with unchanged(settings):  # no document, no file, no notification
        response = await upload(client, acme.api.token, anna.account_id, "Return.pdf", PDF)
    assert payload_error(response.json()["data"]) == "TOO_LARGE"


# EMAIL SYNC ----------------------------------------------------------------------------------


CLOSED = Endpoint("127.0.0.1", 9)  # discard: nothing answers there in the test machine


async def test_connect_mailbox_with_a_bad_nested_argument(acme: Firm, settings: Settings) -> None:
    query = """mutation($input: ConnectMailboxInput!) { connectMailbox(input: $input) {
      errors { code } mailbox { id historyImports(first: 1000) { address } } } }"""
    async with unchanged(settings):  # refused before any connection is tried
        body = await acme.api.post(query, {"input": mailbox_input(CLOSED, CLOSED)})
    assert top_error(body) == "BAD_USER_INPUT"


async def test_sync_mailbox_with_a_bad_nested_argument(acme: Firm, settings: Settings) -> None:
    mailbox = await add_mailbox(acme.owner.firm_id, CLOSED, settings)  # type: ignore[arg-type]
    query = """mutation($id: ID!) { syncMailbox(id: $id) {
      errors { code } mailbox { lastError historyImports(first: -1) { address } } } }"""
    async with unchanged(settings):  # no pass ran: no lease taken, no error recorded
        body = await acme.api.post(query, {"id": ids.encode("Mailbox", mailbox.pk)})
    assert top_error(body) == "BAD_USER_INPUT"


async def test_reply_to_message(acme: Firm, settings: Settings) -> None:
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    mailbox = await add_mailbox(acme.owner.firm_id, CLOSED, settings)  # type: ignore[arg-type]
    message_id = "<papers@miller.example>"
    key = hashlib.sha256(message_id.encode()).hexdigest()
    message = await Message.create(
        firm_id=acme.owner.firm_id,
        message_id=message_id,
        message_key=key,
        thread_key=key,
        subject="Papers",
        from_address="anna@miller.example",
        to_addresses=[mailbox.address_normalized],
        sent_at=datetime.now(UTC),
        text_body="Here they are.",
        direction="INBOUND",
        mailbox=mailbox,
    )
    account_pk = ids.decode(anna.account_id, "Account")
    await MessageAccount.create(
        firm_id=acme.owner.firm_id, message=message, account_id=account_pk, sent_at=message.sent_at
    )
    reply = """mutation($id: ID!, $body: String!) { replyToMessage(messageId: $id, body: $body) {
      errors { code } message { id NESTED } } }"""
    variables = {"id": ids.encode("Message", message.pk), "body": " \n "}
    async with unchanged(settings):
        data = await acme.api.data(reply.replace("NESTED", ""), variables)
    assert payload_error(data) == "INVALID_TEXT"
    variables["body"] = "Thank you."
    async with unchanged(settings):  # no reply stored, nothing queued
        body = await acme.api.post(reply.replace("NESTED", f"accounts {{ {BAD_PAGE} }}"), variables)
    assert top_error(body) == "BAD_USER_INPUT"


async def test_accept_invitation_with_a_bad_selection_leaves_the_invitation_unused(
    acme: Firm, anon: Api, settings: Settings, smtp: SmtpServer
):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await login_on(acme.api, anna.account_email_id)
    [mail] = await deliver(settings, smtp)
    bad = ACCEPT.replace("currentAccount { id name }", f"currentAccount {{ {BAD_PAGE} }}")
    variables = {"token": token_in(mail), "password": "client-password-9"}
    async with unchanged(settings):  # no user activated, no session, the invitation unused
        assert top_error(await anon.post(bad, variables)) == "BAD_USER_INPUT"
    accepted = (await anon.data(ACCEPT, variables))["acceptInvitation"]
    assert accepted["errors"] == [] and accepted["token"]


# The guard: no mutation or argument is forgotten ----------------------------------------------


def test_every_mutation_with_a_payload_checks_its_selection() -> None:
    for field in Mutation.__strawberry_definition__.fields:
        assert any(isinstance(e, ChecksSelection) for e in field.extensions), field.name


def test_every_field_argument_that_could_fail_is_checked_before_a_mutation() -> None:
    schema = build_schema(Settings(_env_file=None))._schema
    roots = {"Query", "Mutation", "Subscription"}
    for name, graphql_type in schema.type_map.items():
        if not isinstance(graphql_type, GraphQLObjectType) or name in roots or name[:2] == "__":
            continue
        for field_name, field in graphql_type.fields.items():
            enums_only = all(
                isinstance(get_nullable_type(a.type), GraphQLEnumType) for a in field.args.values()
            )
            if field.args and not enums_only:
                assert (name, field_name) in ARGUMENT_CHECKS, f"{name}.{field_name}"
