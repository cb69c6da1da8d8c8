"""The sync's store writes its rows by hand (services/mail/store: values, not Model instances,
in multi-row INSERTs): what it stores is what Tortoise stores for the same Message, and the
Message of each outcome is the stored row as read back. `synced_accounts` (its SELECT by hand
too) answers what the Tortoise query answered."""

from __future__ import annotations

import warnings
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import pytest
from tortoise import Tortoise
from tortoise.fields import CharField, DatetimeField, Field, IntField, JSONField, TextField

from models import (
    Account,
    AccountEmail,
    Attachment,
    Contact,
    EmailAddress,
    Message,
    MessageAccount,
)
from portico.settings import Settings
from schema import ids
from services.mail import store as message_store
from services.mail.parse import ParsedMessage, parse_message
from services.shared.scope import FirmScope
from tests.support.crm_ops import new_account
from tests.support.databases import Database
from tests.support.mail import OFFICE, mail

# Written by hand: compared as the database holds them. created_at differs (written later).
SKIP = {"id", "firm_id", "created_at"}


def _messages() -> list[ParsedMessage]:
    """Inbound with Cc, outbound answering it (References), a Date east of UTC, and one read
    from its headers alone (no bodies stored)."""
    first = mail(
        "anna@client.example",
        OFFICE,
        "Figures",
        cc=["ben@client.example"],
        html="<p>Figures</p>",
        message_id="<first@client.example>",
        date=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
    )
    reply = mail(
        OFFICE,
        "anna@client.example",
        "Re: Figures",
        message_id="<reply@acme.example>",
        in_reply_to="<first@client.example>",
        references=["<first@client.example>"],
        date=datetime(2026, 3, 2, 11, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    skipped = parse_message(mail("anna@client.example", message_id="<big@client.example>"))
    reason = "larger than 1 MB: body and attachments not stored"
    return [parse_message(first), parse_message(reply), replace(skipped, content_skipped=reason)]


async def _rows(table: str, firm_id: int) -> list[dict[str, Any]]:
    """The firm's rows of `table` as the driver returns them (JSON and, on SQLite, times as
    the text stored), oldest first."""
    conn = Tortoise.get_connection("default")
    rows = await conn.execute_query_dict(f'SELECT * FROM "{table}" ORDER BY "id"')
    return [dict(row) for row in rows if row["firm_id"] == firm_id]


async def test_rows_are_stored_as_tortoise_stores_them(acme, globex, settings: Settings):
    parsed = _messages()
    ours = ids.decode((await new_account(acme.api, "Miller"))["id"], "Account")
    theirs = ids.decode((await new_account(globex.api, "Miller"))["id"], "Account")
    scope = FirmScope(acme.owner.firm_id)
    outcomes = await message_store.store_messages(
        scope, [(p, {ours}) for p in parsed], {OFFICE}, settings=settings
    )
    assert [o.created for o in outcomes] == [True, True, True]
    assert [o.new_account_ids for o in outcomes] == [[ours]] * 3
    stored = await _rows("message", acme.owner.firm_id)

    # The same messages saved one by one by Tortoise (Model.save, bulk_create) in another firm.
    other = FirmScope(globex.owner.firm_id)
    for p, row in zip(parsed, stored, strict=True):
        message = message_store.message_row(
            other, p, {OFFICE}, None, row["thread_key"], sender_auth=row["sender_auth"]
        )
        await message.save()
        await MessageAccount.bulk_create(message_store.link_rows(other, message, [theirs]))
    expected = await _rows("message", globex.owner.firm_id)
    assert [{k: v for k, v in r.items() if k not in SKIP} for r in stored] == [
        {k: v for k, v in r.items() if k not in SKIP} for r in expected
    ]
    assert [r["direction"] for r in stored] == ["INBOUND", "OUTBOUND", "INBOUND"]
    assert stored[1]["thread_key"] == stored[0]["thread_key"]
    assert stored[2]["text_body"] is None and stored[2]["content_skipped"]
    links = await _rows("message_account", acme.owner.firm_id)
    their_links = await _rows("message_account", globex.owner.firm_id)
    assert [r["sent_at"] for r in links] == [r["sent_at"] for r in their_links]
    assert [(r["message_id"], r["account_id"]) for r in links] == [(r["id"], ours) for r in stored]


async def test_an_outcomes_message_is_the_row_read_back(acme, settings: Settings):
    account = ids.decode((await new_account(acme.api, "Miller"))["id"], "Account")
    scope = FirmScope(acme.owner.firm_id)
    outcomes = await message_store.store_messages(
        scope, [(p, {account}) for p in _messages()], {OFFICE}, settings=settings
    )
    for outcome in outcomes:
        assert vars(outcome.message) == vars(await Message.get(pk=outcome.message.pk))
    # It saves as any Message read from the database does: an UPDATE of its row.
    message = outcomes[0].message
    message.subject = "Figures (corrected)"
    await message.save()
    assert await Message.filter(firm_id=acme.owner.firm_id).count() == 3
    assert (await Message.get(pk=message.pk)).subject == "Figures (corrected)"


async def _address(firm_id: int, address: str, toggles: list[tuple[int, bool]]) -> None:
    """`address` (a contact's) in each account of `toggles`, with EMAIL SYNC on or off."""
    contact = await Contact.create(firm_id=firm_id, first_name="C", last_name=address)
    email = await EmailAddress.create(
        firm_id=firm_id, contact_id=contact.pk, address=address.upper(), address_normalized=address
    )
    for account_id, sync in toggles:
        await AccountEmail.create(
            firm_id=firm_id, account_id=account_id, email_address_id=email.pk, email_sync=sync
        )


async def test_synced_accounts(acme, globex):
    firm, other = acme.owner.firm_id, globex.owner.firm_id
    one, two, archived = [
        (await Account.create(firm_id=firm, name=name, type="FAMILY")).pk
        for name in ("One", "Two", "Archived")
    ]
    await Account.filter(id=archived).update(archived_at=datetime.now(UTC))
    theirs = (await Account.create(firm_id=other, name="Theirs", type="FAMILY")).pk
    await _address(firm, "anna@client.example", [(one, True), (two, True), (archived, True)])
    await _address(firm, "ben@client.example", [(one, False), (two, True)])
    await _address(firm, "carl@client.example", [(one, False)])
    await _address(other, "anna@client.example", [(theirs, True)])
    await _address(other, "dora@client.example", [(theirs, True)])
    wanted = ["anna@client.example", "ben@client.example", "carl@client.example"]
    wanted += ["dora@client.example", "nobody@client.example", "anna@client.example"]
    assert await message_store.synced_accounts(FirmScope(firm), wanted) == {
        "anna@client.example": {one, two},
        "ben@client.example": {two},
    }
    assert await message_store.synced_accounts(FirmScope(firm), []) == {}
    assert await message_store.synced_accounts(FirmScope(other), wanted) == {
        "anna@client.example": {theirs},
        "dora@client.example": {theirs},
    }


class _Kind(StrEnum):
    IN = "INBOUND"


_NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
# Values of every type a column may meet, the usual ones first (the fast paths' own).
_TYPICAL: dict[type[Field], list[Any]] = {
    CharField: ["", "a", "PASS", "x" * 8],  # within the shortest's length (8)
    TextField: ["", "Figures", None],
    IntField: [1, 2**31 - 1, None],
    JSONField: [[], ["<a@b>"], {"a": [1, "b"]}],
    DatetimeField: [_NOW, _NOW.astimezone(timezone(timedelta(hours=2))), None],
}
_ODD: list[Any] = [
    None,
    "x" * 9,
    "x" * 1000,
    _Kind.IN,
    42,
    3.5,
    b"[1]",
    '["a"]',
    "not json",
    ("a",),
    datetime(2026, 3, 2, 9, 30),  # naive
    "2026-03-02T09:30:00",
]


def _outcome(convert: Any, values: list[Any]) -> tuple[Any, list[str]]:
    """What `convert(values)` returns (or raises), and its warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result: Any = convert(list(values))
        except Exception as exc:
            result = (type(exc), str(exc))
    return result, [str(w.message) for w in caught]


@pytest.mark.parametrize("use_tz", ["True", "False"])
async def test_each_column_is_converted_as_the_fields_to_db_value_converts_it(
    database: Database, use_tz: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_insert`'s converters (a plain function per column) against the stock conversion,
    value by value, for every column it writes: typical columns, and each odd value among
    them (errors and warnings included)."""
    monkeypatch.setenv("USE_TZ", use_tz)
    conn = Tortoise.get_connection("default")
    for model in (Message, MessageAccount, Attachment):
        names = conn.executor_class(model=model, db=conn).regular_columns
        assert {"firm_id", "sent_at"} & set(names), names  # the columns _insert writes
        for name in names:
            field = model._meta.fields_map[name]
            typical = next(v for kind, v in _TYPICAL.items() if isinstance(field, kind))
            if isinstance(field, CharField):  # at the limit, and just over it
                typical = [*typical, "y" * field.max_length]
                odd_ones = [*_ODD, "y" * (field.max_length + 1)]
            else:
                odd_ones = _ODD
            fast = message_store._column_converter(field)

            def stock(values: list[Any], field: Field = field) -> list[Any]:
                return [field.to_db_value(value, None) for value in values]

            columns = [typical, [], *([*typical, odd] for odd in odd_ones)]
            columns += [[odd] for odd in odd_ones]
            for column in columns:
                assert _outcome(fast, column) == _outcome(stock, column), (model, name, column)


async def test_typical_text_and_times_pass_as_they_are(database: Database) -> None:
    """The fast paths are taken: no copy, no per-value call, for the sync's usual values."""
    fields = Message._meta.fields_map
    for name in ("message_key", "sender_auth", "subject", "sent_at", "firm_id", "mailbox_id"):
        typical = next(v for kind, v in _TYPICAL.items() if isinstance(fields[name], kind))
        if not fields[name].null:
            typical = [v for v in typical if v is not None]
        assert message_store._column_converter(fields[name])(typical) is typical, name
