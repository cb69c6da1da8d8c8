"""NOTIFY through the API, with the mail read back from a real SMTP server."""

from __future__ import annotations

import pytest

from models import Account as AccountModel
from models import AccountContact, AccountEmail, Contact, EmailAddress, Invitation, OutboundEmail
from schema import ids
from services.portal import notify
from services.shared.errors import InputError
from services.shared.scope import FirmScope
from tests.support.api import Api
from tests.support.crm_ops import ACCOUNT, ADD_EMAIL, UPDATE_EMAIL, new_account, new_contact
from tests.support.crm_ops import LINK as LINK_CONTACT
from tests.support.login import (
    FLAGS,
    accept,
    activated_client,
    invitee,
    login_on,
    text_of,
    token_in,
)
from tests.support.login import deliver as deliver_all
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.support.sqlcount import count_sql

SEND = """mutation($input: SendFirmEmailInput!) { sendFirmEmail(input: $input) { errors { code field } queued } }"""
EVENT = """mutation($input: ClientEventInput!) { notifyClientEvent(input: $input) { errors { code field } queued } }"""
# The same with the error messages, for the tests of input limits.
SEND_WHY = SEND.replace("errors { code field }", "errors { code field message }")
EVENT_WHY = EVENT.replace("errors { code field }", "errors { code field message }")
PREFS = """mutation($input: NotificationPreferencesInput!) { setNotificationPreferences(input: $input) {
  errors { code } accountEmail { notificationPreferences { all enabled } } } }"""


async def deliver(settings, smtp) -> list:
    """Every message received so far, in the order it was queued: the worker sends several
    at once (services/loops/delivery), so they may arrive in any order."""
    messages = await deliver_all(settings, smtp)
    queued = dict(await OutboundEmail.all().values_list("message_id", "id"))
    return sorted(messages, key=lambda message: queued[message["Message-ID"].strip()])


async def _flags(api: Api, account_email_id: str, **flags: bool) -> None:
    await api.ok(FLAGS, {"input": {"accountEmailId": account_email_id, **flags}})


async def _emails(api: Api, account_id: str) -> dict[str, str]:
    """address -> AccountEmail id in the account."""
    rows = (await api.data(ACCOUNT, {"id": account_id}))["account"]["emails"]
    return {r["emailAddress"]["address"]: r["id"] for r in rows}


def _to(messages) -> list[str]:
    return sorted(m["To"] for m in messages)


async def test_firm_email_goes_to_every_notify_address_only(acme, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await acme.api.ok(
        ADD_EMAIL,
        {"c": anna.contact_id, "email": {"address": "anna@work.example", "label": "Work Email"}},
    )
    ben = await invitee(acme.api, "Other Family", "ben@other.example", first="Ben")
    await acme.api.ok(LINK_CONTACT, {"a": anna.account_id, "c": ben.contact_id})
    emails = await _emails(acme.api, anna.account_id)
    await _flags(acme.api, emails["anna@miller.example"], notify=True)
    await _flags(acme.api, emails["anna@work.example"], notify=True)

    for kind in ["DIRECT", "MASS", "AUTOMATION"]:
        variables = {
            "input": {
                "accountIds": [anna.account_id],
                "subject": f"Tax return {kind}",
                "body": "Line one\nLine two",
                "kind": kind,
            }
        }
        assert (await acme.api.ok(SEND, variables))["queued"] == 2
    messages = await deliver(settings, smtp)
    assert len(messages) == 6
    assert _to(messages[:2]) == ["anna@miller.example", "anna@work.example"]
    assert "ben@other.example" not in {m["To"] for m in messages}
    assert messages[0]["Subject"] == "Tax return DIRECT"
    assert "Line one" in text_of(messages[0]) and "Acme LLP" in text_of(messages[0])
    kinds = await OutboundEmail.all().order_by("id").values_list("kind", flat=True)
    assert kinds == ["DIRECT", "DIRECT", "MASS", "MASS", "AUTOMATION", "AUTOMATION"]


async def test_notifications_follow_each_address_preferences(acme, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await acme.api.ok(
        ADD_EMAIL,
        {"c": anna.contact_id, "email": {"address": "anna@work.example", "label": "Work Email"}},
    )
    emails = await _emails(acme.api, anna.account_id)
    for row_id in emails.values():
        await _flags(acme.api, row_id, notify=True)
    changed = await acme.api.ok(
        PREFS,
        {
            "input": {
                "accountEmailId": emails["anna@work.example"],
                "all": False,
                "enabled": ["INVOICES_AND_PAYMENTS"],
            }
        },
    )
    assert changed["accountEmail"]["notificationPreferences"] == {
        "all": False,
        "enabled": ["INVOICES_AND_PAYMENTS"],
    }

    approval = {
        "input": {
            "accountId": anna.account_id,
            "category": "APPROVALS",
            "title": "Please approve",
            "body": "The draft is ready.",
            "link": "https://portal.example/approve/1",
        }
    }
    assert (await acme.api.ok(EVENT, approval))["queued"] == 1
    invoice = {
        "input": {
            "accountId": anna.account_id,
            "category": "INVOICES_AND_PAYMENTS",
            "title": "New invoice",
        }
    }
    assert (await acme.api.ok(EVENT, invoice))["queued"] == 2
    first, *rest = await deliver(settings, smtp)
    assert first["To"] == "anna@miller.example" and first["Subject"] == "Please approve"
    assert "https://portal.example/approve/1" in text_of(first)
    assert _to(rest) == ["anna@miller.example", "anna@work.example"]
    categories = await OutboundEmail.all().values_list("category", flat=True)
    assert sorted(categories) == ["APPROVALS", "INVOICES_AND_PAYMENTS", "INVOICES_AND_PAYMENTS"]


async def test_pending_activation_gets_a_working_banner(acme, client, settings, smtp):
    carl = await invitee(acme.api, "Carl Family", "carl@old.example", first="Carl")
    await login_on(acme.api, carl.account_email_id)
    await _flags(acme.api, carl.account_email_id, notify=True)
    event = {
        "input": {
            "accountId": carl.account_id,
            "category": "DOCUMENT_UPLOADS",
            "title": "New document",
        }
    }
    await acme.api.ok(EVENT, event)
    await acme.api.ok(
        SEND,
        {
            "input": {
                "accountIds": [carl.account_id],
                "subject": "Hello",
                "body": "A plain firm email.",
            }
        },
    )
    invitation, notification, firm_email = await deliver(settings, smtp)
    assert "not active yet" in text_of(notification)
    assert "not active yet" not in text_of(firm_email)  # regular firm email: no banner
    banner_token = token_in(notification)
    assert banner_token != token_in(invitation)  # the mailed invitation still works too

    # The banner's link activates the portal user.
    accepted = await accept(Api(client), banner_token)
    assert accepted["errors"] == [] and accepted["currentAccount"]["name"] == "Carl Family"
    await acme.api.ok(EVENT, event)
    *_, after = await deliver(settings, smtp)
    assert "not active yet" not in text_of(after)


async def test_an_address_change_kills_older_banner_links(acme, client, settings, smtp):
    carl = await invitee(acme.api, "Carl Family", "carl@old.example", first="Carl")
    await login_on(acme.api, carl.account_email_id)
    await _flags(acme.api, carl.account_email_id, notify=True)
    await acme.api.ok(
        EVENT,
        {
            "input": {
                "accountId": carl.account_id,
                "category": "CHATS_AND_TASKS",
                "title": "New task",
            }
        },
    )
    _, notification = await deliver(settings, smtp)
    await acme.api.ok(UPDATE_EMAIL, {"id": carl.email_id, "address": "carl@new.example"})
    refused = await accept(Api(client), token_in(notification))
    assert refused["errors"][0]["code"] == "INVITATION_REVOKED"


async def test_firm_copies_say_whom_they_went_to(acme, settings, smtp):
    settings_payload = await acme.api.ok(
        'mutation { updateFirmSettings(input: {copyAddress: "archive@acme.example"}) { errors { code } firm { copyAddress } } }'
    )
    assert settings_payload["firm"]["copyAddress"] == "archive@acme.example"
    carl = await invitee(acme.api, "Carl Family", "carl@client.example", first="Carl")
    await login_on(acme.api, carl.account_email_id)
    await _flags(acme.api, carl.account_email_id, notify=True)
    await acme.api.ok(
        EVENT,
        {
            "input": {
                "accountId": carl.account_id,
                "category": "PROPOSALS",
                "title": "Engagement letter",
            }
        },
    )
    _, to_client, copy = await deliver(settings, smtp)
    assert to_client["To"] == "carl@client.example" and copy["To"] == "archive@acme.example"
    assert "sent to carl@client.example" in text_of(copy)
    assert "/invitation?token=" in text_of(to_client)
    assert "/invitation?token=" not in text_of(copy)  # the copy never carries the link
    bad = await acme.api.data(
        'mutation { updateFirmSettings(input: {copyAddress: "nope"}) { errors { code } } }'
    )
    assert bad["updateFirmSettings"]["errors"][0]["code"] == "INVALID_EMAIL"


async def test_subject_names_the_account_when_the_contact_has_several(acme, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    bakery = await new_account(acme.api, "Anna's Bakery", "COMPANY")
    await _flags(acme.api, anna.account_email_id, notify=True)
    await acme.api.ok(
        SEND, {"input": {"accountIds": [anna.account_id], "subject": "Before", "body": "x"}}
    )
    await acme.api.ok(LINK_CONTACT, {"a": bakery["id"], "c": anna.contact_id})
    await acme.api.ok(
        SEND, {"input": {"accountIds": [anna.account_id], "subject": "After", "body": "x"}}
    )
    before, after = await deliver(settings, smtp)
    assert before["Subject"] == "Before"
    assert after["Subject"] == "[Miller Family] After"


async def test_odd_input_renders_safely(acme, settings, smtp):
    anna = await invitee(acme.api, "Müller & Söhne <GmbH>", "anna@miller.example")
    await _flags(acme.api, anna.account_email_id, notify=True)
    title = "<b>Überweisung</b> " + "lang " * 200
    await acme.api.ok(
        EVENT,
        {
            "input": {
                "accountId": anna.account_id,
                "category": "INVOICES_AND_PAYMENTS",
                "title": title[:290],
                "body": "<script>alert(1)</script>",
            }
        },
    )
    [mail] = await deliver(settings, smtp)
    assert mail["Subject"].startswith("<b>Überweisung</b>")  # text, decoded from RFC 2047
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;b&gt;Überweisung" in html


async def test_bad_input_queues_nothing(acme, globex):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await _flags(acme.api, anna.account_email_id, notify=True)
    theirs = await new_account(globex.api, "Theirs")
    cases = [
        (
            SEND,
            {"input": {"accountIds": [anna.account_id], "subject": " ", "body": "x"}},
            "INVALID_TEXT",
        ),
        (SEND, {"input": {"accountIds": [], "subject": "s", "body": "x"}}, "NO_ACCOUNTS"),
        (
            SEND,
            {"input": {"accountIds": [anna.account_id, theirs["id"]], "subject": "s", "body": "x"}},
            "NOT_FOUND",
        ),
        (
            EVENT,
            {
                "input": {
                    "accountId": anna.account_id,
                    "category": "APPROVALS",
                    "title": "t",
                    "link": "javascript:alert(1)",
                }
            },
            "INVALID_LINK",
        ),
        (
            EVENT,
            {"input": {"accountId": theirs["id"], "category": "APPROVALS", "title": "t"}},
            "NOT_FOUND",
        ),
    ]
    for document, variables, code in cases:
        data = await acme.api.data(document, variables)
        [payload] = data.values()
        assert payload["queued"] == 0 and payload["errors"][0]["code"] == code, (variables, payload)
    assert await OutboundEmail.all().count() == 0


async def test_a_client_chooses_for_their_own_address_only(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    ben = await invitee(acme.api, "Ben Family", "ben@miller.example", first="Ben")
    await acme.api.ok(LINK_CONTACT, {"a": anna.account_id, "c": ben.contact_id})
    emails = await _emails(acme.api, anna.account_id)
    api = await activated_client(acme.api, Api(client), settings, smtp, anna.account_email_id)
    own = {
        "input": {
            "accountEmailId": emails["anna@miller.example"],
            "all": False,
            "enabled": ["APPROVALS"],
        }
    }
    assert (await api.ok(PREFS, own))["accountEmail"]["notificationPreferences"]["enabled"] == [
        "APPROVALS"
    ]
    others = {"input": {"accountEmailId": emails["ben@miller.example"], "all": False}}
    assert (await api.data(PREFS, others))["setNotificationPreferences"]["errors"][0][
        "code"
    ] == "NOT_FOUND"
    elsewhere = {"input": {"accountEmailId": ben.account_email_id, "all": False}}
    assert (await api.data(PREFS, elsewhere))["setNotificationPreferences"]["errors"][0][
        "code"
    ] == "NOT_FOUND"


async def _bulk_accounts(firm_id: int, start: int, count: int) -> list[str]:
    """`count` accounts, each with one contact whose address has NOTIFY on (set up in bulk)."""
    accounts = [
        AccountModel(firm_id=firm_id, name=f"Bulk {i:04}", type="FAMILY")
        for i in range(start, start + count)
    ]
    await AccountModel.bulk_create(accounts)
    accounts = await AccountModel.filter(name__in=[a.name for a in accounts]).order_by("id")
    contacts = [
        Contact(firm_id=firm_id, first_name="C", last_name=str(i))
        for i in range(start, start + count)
    ]
    await Contact.bulk_create(contacts)
    contacts = await Contact.filter(
        firm_id=firm_id, last_name__in=[str(i) for i in range(start, start + count)]
    ).order_by("id")
    emails = [
        EmailAddress(
            firm_id=firm_id,
            contact_id=c.pk,
            address=f"c{c.last_name}@bulk.example",
            address_normalized=f"c{c.last_name}@bulk.example",
        )
        for c in contacts
    ]
    await EmailAddress.bulk_create(emails)
    emails = await EmailAddress.filter(
        address_normalized__in=[e.address_normalized for e in emails]
    ).order_by("id")
    await AccountContact.bulk_create(
        [
            AccountContact(firm_id=firm_id, account_id=a.pk, contact_id=c.pk)
            for a, c in zip(accounts, contacts, strict=True)
        ]
    )
    await AccountEmail.bulk_create(
        [
            AccountEmail(firm_id=firm_id, account_id=a.pk, email_address_id=e.pk, notify=True)
            for a, e in zip(accounts, emails, strict=True)
        ]
    )
    return [ids.encode("Account", a.pk) for a in accounts]


async def test_mass_mail_is_written_in_bulk(acme):
    small = await _bulk_accounts(acme.owner.firm_id, 0, 10)
    large = await _bulk_accounts(acme.owner.firm_id, 10, 600)
    counts = []
    for account_ids in (small, large):
        variables = {
            "input": {
                "accountIds": account_ids,
                "subject": "Newsletter",
                "body": "Hello",
                "kind": "MASS",
            }
        }
        with count_sql() as statements:
            assert (await acme.api.ok(SEND, variables))["queued"] == len(account_ids)
        counts.append(len(statements))
    # A few more INSERT batches of 500 rows for the large mailing; no statement per recipient.
    assert counts[1] - counts[0] <= 2, counts
    assert await OutboundEmail.filter(kind="MASS").count() == 610


async def test_copies_say_whether_the_client_mail_carried_an_activation_link(
    acme, client, settings, smtp
):
    """Carl (LOGIN on, not activated) gets the banner and his copy a note of it; Dora
    (activated) and Ed (LOGIN off) get neither, nor do their copies."""
    await acme.api.ok(
        'mutation { updateFirmSettings(input: {copyAddress: "archive@acme.example"}) { errors { code } } }'
    )
    carl = await invitee(acme.api, "Carl Family", "carl@client.example", first="Carl")
    for first, address in [("Dora", "dora@client.example"), ("Ed", "ed@client.example")]:
        await new_contact(acme.api, first, "Client", [(address, "Email")], [carl.account_id])
    emails = await _emails(acme.api, carl.account_id)
    await login_on(acme.api, emails["dora@client.example"])
    await login_on(acme.api, emails["carl@client.example"])
    dora_invitation, _ = await deliver(settings, smtp)
    assert (await accept(Api(client), token_in(dora_invitation)))["errors"] == []
    for row_id in emails.values():
        await _flags(acme.api, row_id, notify=True)
    invitations_before = await Invitation.all().count()

    event = {"input": {"accountId": carl.account_id, "category": "APPROVALS", "title": "Sign"}}
    assert (await acme.api.ok(EVENT, event))["queued"] == 3
    mails = (await deliver(settings, smtp))[2:]
    assert len(mails) == 6
    to_client = {m["To"]: text_of(m) for m in mails if m["To"] != "archive@acme.example"}
    copies = {
        address: text
        for m in mails
        if m["To"] == "archive@acme.example"
        for address in to_client
        if f"sent to {address}." in (text := text_of(m))
    }
    assert (
        sorted(copies)
        == sorted(to_client)
        == [
            "carl@client.example",
            "dora@client.example",
            "ed@client.example",
        ]
    )
    note = "their copy carries an activation link"
    assert "not active yet" in to_client["carl@client.example"]
    assert "/invitation?token=" in to_client["carl@client.example"]
    assert note in copies["carl@client.example"]
    assert "/invitation?token=" not in copies["carl@client.example"]
    for address in ["dora@client.example", "ed@client.example"]:
        for text in (to_client[address], copies[address]):
            assert "not active yet" not in text and "has not activated" not in text, address
            assert "/invitation?token=" not in text, address
    # Only Carl's banner made an invitation: none for Ed, whose LOGIN is off.
    assert await Invitation.all().count() == invitations_before + 1


async def test_text_limits_hold_at_their_boundaries(acme):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await _flags(acme.api, anna.account_email_id, notify=True)

    async def send(**fields) -> dict:
        base = {"accountIds": [anna.account_id], "subject": "s", "body": "b"}
        return (await acme.api.data(SEND_WHY, {"input": {**base, **fields}}))["sendFirmEmail"]

    async def event(**fields) -> dict:
        base = {"accountId": anna.account_id, "category": "APPROVALS", "title": "t"}
        return (await acme.api.data(EVENT_WHY, {"input": {**base, **fields}}))["notifyClientEvent"]

    accepted = [
        await send(subject="s" * 300),
        await send(subject="  " + "s" * 300 + "\n"),  # trimmed first
        await send(body="b" * 100_000),
        await event(title="t" * 300),
        await event(body="b" * 100_000),
        await event(body=""),
        await event(body=None),
    ]
    assert [p["errors"] for p in accepted] == [[]] * len(accepted)
    assert [p["queued"] for p in accepted] == [1] * len(accepted)
    refused = [
        (await send(subject="s" * 301), "subject", 300),
        (await send(subject=" \t"), "subject", 300),
        (await send(body="b" * 100_001), "body", 100_000),
        (await send(body=" "), "body", 100_000),
        (await event(title="t" * 301), "title", 300),
        (await event(title=" "), "title", 300),
        (await event(body="b" * 100_001), "body", 100_000),
    ]
    for payload, field, limit in refused:
        assert payload == {
            "errors": [
                {
                    "code": "INVALID_TEXT",
                    "field": ["input", field],
                    "message": f"{field} is 1-{limit} characters.",
                }
            ],
            "queued": 0,
        }
    assert await OutboundEmail.all().count() == len(accepted)
    subjects = (
        await OutboundEmail.filter(kind="DIRECT").order_by("id").values_list("subject", flat=True)
    )
    assert subjects[1] == "s" * 300


async def test_links_hold_at_their_boundaries(acme, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await _flags(acme.api, anna.account_email_id, notify=True)

    async def event(link: str | None) -> dict:
        variables = {
            "input": {
                "accountId": anna.account_id,
                "category": "APPROVALS",
                "title": "t",
                "link": link,
            }
        }
        return (await acme.api.data(EVENT_WHY, variables))["notifyClientEvent"]

    longest = "https://portal.example/" + "a" * (2_000 - len("https://portal.example/"))
    for link in [longest, " http://portal.example/x ", "   ", None]:
        assert (await event(link)) == {"errors": [], "queued": 1}, link
    for link in [longest + "a", "ftp://portal.example/x", "https:///x", "javascript:alert(1)"]:
        assert (await event(link)) == {
            "errors": [
                {
                    "code": "INVALID_LINK",
                    "field": ["input", "link"],
                    "message": "A link is an http(s) URL.",
                }
            ],
            "queued": 0,
        }, link
    longest_mail, trimmed, blank, none = await deliver(settings, smtp)
    assert longest in text_of(longest_mail)
    assert "\nhttp://portal.example/x\r\n" in text_of(trimmed)  # trimmed
    assert "http" not in text_of(blank) and "http" not in text_of(none)


async def test_account_lists_hold_their_limit_and_name_the_wrong_id(acme, globex):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await _flags(acme.api, anna.account_email_id, notify=True)
    theirs = (await new_account(globex.api, "Theirs"))["id"]

    async def send(account_ids: list[str]) -> dict:
        variables = {"input": {"accountIds": account_ids, "subject": "s", "body": "b"}}
        return (await acme.api.data(SEND_WHY, variables))["sendFirmEmail"]

    # 10,000 ids are allowed (one account named 10,000 times gets one mail), 10,001 are not.
    assert await send([anna.account_id] * 10_000) == {"errors": [], "queued": 1}
    too_many = {
        "code": "TOO_MANY",
        "field": ["input", "accountIds"],
        "message": "At most 10000 accounts at once.",
    }
    assert await send([anna.account_id] * 10_001) == {"errors": [too_many], "queued": 0}
    none = {
        "code": "NO_ACCOUNTS",
        "field": ["input", "accountIds"],
        "message": "Name at least one account.",
    }
    assert await send([]) == {"errors": [none], "queued": 0}

    def not_found(*field: str) -> dict:
        error = {"code": "NOT_FOUND", "field": ["input", *field], "message": "No such account."}
        return {"errors": [error], "queued": 0}

    assert await send([anna.account_id, theirs, anna.account_id]) == not_found("accountIds", "1")
    assert await send(["not-an-id", anna.account_id]) == not_found("accountIds", "0")
    assert await send([anna.account_id, anna.contact_id]) == not_found("accountIds", "1")
    event = {"accountId": theirs, "category": "APPROVALS", "title": "t"}
    refused = (await acme.api.data(EVENT_WHY, {"input": event}))["notifyClientEvent"]
    assert refused == not_found("accountId")
    assert await OutboundEmail.all().count() == 1


async def test_client_mail_is_from_the_firm_and_listed_under_the_account(acme, settings, smtp):
    await acme.api.ok(
        'mutation { updateFirmSettings(input: {copyAddress: "archive@acme.example"}) { errors { code } } }'
    )
    carl = await invitee(acme.api, "Carl Family", "carl@client.example", first="Carl")
    await _flags(acme.api, carl.account_email_id, notify=True)
    event = {"accountId": carl.account_id, "category": "PROPOSALS", "title": "Engagement letter"}
    await acme.api.ok(EVENT, {"input": event})
    firm_email = {"accountIds": [carl.account_id], "subject": "Hello", "body": "Dear Carl"}
    await acme.api.ok(SEND, {"input": firm_email})
    mails = await deliver(settings, smtp)
    assert [m["To"] for m in mails] == ["carl@client.example", "archive@acme.example"] * 2
    assert {m["From"].addresses[0].display_name for m in mails} == {"Acme LLP"}
    assert all("Acme LLP · Carl Family" in text_of(m) for m in mails[:2])
    assert all(text_of(m).rstrip().endswith("--\r\nAcme LLP") for m in mails[2:])
    query = "query($id: ID!) { account(id: $id) { deliveries { edges { node { to kind category subject } } } } }"
    listed = (await acme.api.data(query, {"id": carl.account_id}))["account"]["deliveries"]
    assert sorted(tuple(e["node"].values()) for e in listed["edges"]) == [
        ("archive@acme.example", "DIRECT", None, "Hello"),
        ("archive@acme.example", "NOTIFICATION", "PROPOSALS", "Engagement letter"),
        ("carl@client.example", "DIRECT", None, "Hello"),
        ("carl@client.example", "NOTIFICATION", "PROPOSALS", "Engagement letter"),
    ]


async def test_an_unknown_kind_is_refused_by_the_service(acme, settings):
    """The schema's enum keeps other kinds out of the API; the service refuses them too, for
    its callers inside Portico (service level: the API cannot send such a kind)."""
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await _flags(acme.api, anna.account_email_id, notify=True)
    account_id = ids.decode(anna.account_id, "Account")
    scope = FirmScope(acme.owner.firm_id)
    with pytest.raises(InputError) as refused:
        await notify.send_firm_email(scope, [account_id], "s", "b", "NEWSLETTER", settings)
    [error] = refused.value.errors
    assert (error.code, error.field, error.message) == (
        "INVALID_KIND",
        ("input", "kind"),
        "kind is DIRECT, MASS or AUTOMATION.",
    )
    assert await notify.send_firm_email(scope, [account_id], "s", "b", "MASS", settings) == 1
    assert await OutboundEmail.all().values_list("kind", flat=True) == ["MASS"]
