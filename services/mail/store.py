"""Storing synced mail: once per firm, linked to the accounts it concerns, in its thread.

A message is kept (unique on firm + SHA-256 of the Message-ID) when a participant (From, To,
Cc) has EMAIL SYNC on in some account of the firm (`synced_accounts`), and linked to every
such account. A message seen again (another folder or mailbox, a rescan) gains the accounts
that are new since. OUTBOUND when it is from one of the firm's mailboxes, else INBOUND.

One path writes new messages (`_store_new`): their attachments' files first
(services/mail/attachments.keep), then in one transaction the rows (`message_values`, the
fields of the Message replies save too; plain values, not Model instances), their
attachments, the auto-saved Documents and the links, in a few statements whatever the
chunk's size: one multi-row INSERT ... ON CONFLICT DO NOTHING
RETURNING of the messages (a key already stored, by an earlier pass or by another pass
meanwhile, is simply not inserted: no look-up first), one INSERT of all their attachments,
one of all the links, the alerts; auto-save per message with files to save.
`store_messages` sends one fetched chunk through it at once; the messages it did not insert
(stored already, or twice in the chunk) then go through `store_message`, which links them.
A transaction failing on the data (a deadlock with another pass) is rolled back whole and
the chunk stored one by one.

All or nothing per chunk, also when the database goes away: a connection lost mid-store
(server restart, failover, `pg_terminate_backend`) rolls the chunk's transaction back whole
(no message without its links, attachments or documents; files written already are
content-addressed and reused), renews the pool's connections, and raises DBConnectionError
("The database connection was lost while storing N new messages: none of them was stored;
the next pass stores them"): the pass fails with that reason, its cursor before the chunk,
and the next pass stores each message once. A commit whose answer was lost is found again
by key on the next pass (linked, never stored twice). tests/test_store_faults.py.

A message whose content is skipped (`ParsedMessage.content_skipped`: read from its headers
alone, e.g. over the size limit) is stored with the reason and no bodies or attachments.

Auto-save: a message sent since `auto_save_since` (mail sent since the mailbox was
connected: "attachments of future synced mail") has its kept attachments saved into the
Documents of each account it is linked to (when stored, or linked later) whose auto-save
attachments option is on, unless its sender failed authentication.

Private threads (services/mail/threads): mail stored through a PERSONAL mailbox is private to
its owner unless they shared its thread; a private message's attachments are not auto-saved,
now or when it is linked later, until it is shared. Decided inside the storing transaction
with the mailbox's row locked (`_mailbox_now`, one statement per chunk, and one for the shared
threads of a personal one), so a switch of the mailbox or a share that commits meanwhile is
never missed. A message stored already keeps its privacy when another mailbox sees it again,
but for a SHARED mailbox seeing a private one: it becomes that mailbox's, shared (`_shared_copy`).

Sender authentication (`Message.sender_auth`): the DMARC result of the Authentication-Results
header the firm's receiving server added (settings.mail_auth_serv_id; unset: the topmost
header), PASS, FAIL or None (`ParsedMessage.sender_auth`). FAIL refuses auto-save; with
settings.mail_auth_strict anything but PASS does. Such mail is still stored and linked. When a
message is linked later (another copy of it), the stored row's verdict decides: its
attachments are the ones that would be saved.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise import Tortoise, timezone
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import DBConnectionError, IntegrityError, OperationalError
from tortoise.fields import CharField, DatetimeField, Field, JSONField
from tortoise.models import Model
from tortoise.timezone import get_use_tz
from tortoise.transactions import in_transaction
from tortoise.validators import MaxLengthValidator

from models import MailboxVisibility, Message, MessageAccount
from portico.settings import Settings
from services.mail import alerts, attachments, threads
from services.mail.parse import ParsedAttachment, ParsedMessage, message_key, subject_thread_key
from services.shared.outage import connection_lost, renew_connections
from services.shared.scope import FirmScope
from services.webhooks import emit

AUTO_SAVE_SLACK = attachments.AUTO_SAVE_SLACK
INSERT_ROWS = 100  # messages per INSERT statement (about 20 values each: within any limit)
INBOUND = "INBOUND"
OUTBOUND = "OUTBOUND"
_CREATED_AT = Message._meta.fields_map["created_at"]
_SENT_AT = Message._meta.fields_map["sent_at"]

Item = tuple[ParsedMessage, set[int]]  # a message and the accounts it goes to


@dataclass(frozen=True)
class StoreOutcome:
    message: Message
    created: bool
    new_account_ids: list[int]  # accounts linked by this call (all of them when created)


async def synced_accounts(scope: FirmScope, addresses: Iterable[str]) -> dict[str, set[int]]:
    """For each of `addresses` (bare, lower-cased) with EMAIL SYNC on somewhere in the firm,
    the accounts where it is on. Archived accounts count for none: sync links no new mail to
    them (and downloads none only for them)."""
    wanted = sorted(set(addresses))
    if not wanted:
        return {}
    # The SELECT Tortoise builds for AccountEmail through its address and account, by hand:
    # building it cost more CPU than running it (once per fetched batch of the sync).
    conn = Tortoise.get_connection("default")
    sql = _synced_sql(len(wanted), conn.capabilities.dialect == "postgres")
    found: dict[str, set[int]] = {}
    for row in await conn.execute_query_dict(sql, [scope.firm_id, True, *wanted]):
        found.setdefault(row["address"], set()).add(row["account_id"])
    return found


@functools.lru_cache(maxsize=64)
def _synced_sql(count: int, pg: bool) -> str:
    """`synced_accounts`' SELECT for `count` addresses."""
    return _numbered(
        'SELECT e."address_normalized" AS "address", ae."account_id" AS "account_id" '
        'FROM "account_email" ae JOIN "email_address" e ON e."id" = ae."email_address_id" '
        'JOIN "account" a ON a."id" = ae."account_id" '
        'WHERE ae."firm_id" = ? AND ae."email_sync" = ? AND a."archived_at" IS NULL '
        f'AND e."address_normalized" IN ({", ".join("?" * count)})',
        pg,
    )


def _numbered(sql: str, pg: bool) -> str:
    """`sql` with PostgreSQL's numbered parameters ($1, $2, ...) for its question marks."""
    if not pg:
        return sql
    pieces = sql.split("?")
    return pieces[0] + "".join(f"${i}{p}" for i, p in enumerate(pieces[1:], start=1))


async def store_message(
    scope: FirmScope,
    parsed: ParsedMessage,
    account_ids: Iterable[int],
    own_addresses: Iterable[str] = (),
    mailbox_id: int | None = None,
    *,
    settings: Settings | None = None,
    auto_save_since: datetime | None = None,
) -> StoreOutcome:
    """Stores `parsed` once per firm and links it to `account_ids`; a message already stored
    (same key) only gains the accounts it lacks. Each write is one short transaction.

    With `settings`, a message stored for the first time keeps its attachments (files written
    before its transaction). With `auto_save_since` too, for a message sent since then, each
    account linked by this call whose auto-save attachments option is on gets the kept
    attachments among its Documents."""
    accounts = set(account_ids)
    existing = await scope.query(Message).get_or_none(message_key=parsed.message_key)
    if existing is None:
        try:
            outcomes, _ = await _store_new(
                scope,
                [(parsed, accounts)],
                set(own_addresses),
                mailbox_id,
                settings,
                auto_save_since,
            )
            if outcomes:
                return outcomes[0]
        except IntegrityError:
            pass
        # Stored meanwhile by another pass (another mailbox with the same message).
        existing = await scope.query(Message).get(message_key=parsed.message_key)
    linked = set(
        await MessageAccount.filter(message_id=existing.pk).values_list("account_id", flat=True)
    )
    new = sorted(accounts - linked)
    outcome = StoreOutcome(existing, False, new)
    # Seen through another mailbox: a SHARED one takes a personal mailbox's message over.
    elsewhere = mailbox_id not in (None, existing.mailbox_id)
    if new or elsewhere:
        async with in_transaction() as conn:
            released = elsewhere and await _shared_copy(conn, scope, existing, mailbox_id)
            if new:
                await MessageAccount.bulk_create(
                    link_rows(scope, existing, new), ignore_conflicts=True
                )
            if released and settings is not None:
                await threads.save_released(scope, [existing.pk], settings)
            # A private message's attachments wait until its thread is shared (threads.release).
            elif (
                new
                and settings is not None
                and existing.private_to_id is None
                and _auto_saves(parsed, auto_save_since, existing.sender_auth, settings)
            ):
                await attachments.auto_save(scope, existing.pk, new, settings)
            if new:
                await _announce(scope, [outcome])
    return outcome


async def _shared_copy(
    conn: BaseDBAsyncClient, scope: FirmScope, message: Message, mailbox_id: int | None
) -> bool:
    """When `mailbox_id` is a SHARED mailbox (as it is now, its row locked), a message stored
    through a PERSONAL one (or private) becomes its mail, no longer private: a SHARED mailbox
    of the firm holds it, so the firm reads it (shared wins), and its owner's unsharing no
    longer reaches it. Whether it was private (its attachments are released then). The
    message's row is read again under a lock: an unshare may have committed since it was
    read."""
    visibility, _ = await _mailbox_now(conn, scope, mailbox_id)
    if visibility != MailboxVisibility.SHARED:
        return False
    pg = conn.capabilities.dialect == "postgres"
    sql = (
        'SELECT m."private_to_id", b."visibility" FROM "message" m'
        ' LEFT JOIN "mailbox" b ON b."id" = m."mailbox_id" WHERE m."id" = ? AND m."firm_id" = ?'
    )
    rows = await conn.execute_query_dict(
        _numbered(sql + (" FOR UPDATE OF m" if pg else ""), pg), [message.pk, scope.firm_id]
    )
    if not rows:
        return False
    private = rows[0]["private_to_id"] is not None
    message.private_to_id = rows[0]["private_to_id"]
    if not private and rows[0]["visibility"] != MailboxVisibility.PERSONAL:
        return False  # the firm's already (another SHARED mailbox's, or none's)
    await (
        scope.query(Message).filter(id=message.pk).update(mailbox_id=mailbox_id, private_to_id=None)
    )
    message.mailbox_id, message.private_to_id = mailbox_id, None
    return private


async def _mailbox_now(
    conn: BaseDBAsyncClient, scope: FirmScope, mailbox_id: int | None
) -> tuple[str, int | None]:
    """The visibility and owner of the mailbox mail is stored through, read inside the
    storing transaction with its row locked (PostgreSQL): a switch of its visibility
    (services/mail/threads.set_visibility) or a share of its owner's thread commits wholly
    before or after this store, so what is stored follows the state at commit time. No
    mailbox (stored otherwise): SHARED. A mailbox disconnected meanwhile: IntegrityError,
    as the rows' foreign key would be refused."""
    if mailbox_id is None:
        return MailboxVisibility.SHARED, None
    pg = conn.capabilities.dialect == "postgres"
    sql = 'SELECT "visibility", "created_by_id" FROM "mailbox" WHERE "id" = ? AND "firm_id" = ?'
    # NO KEY UPDATE: waits for a switch (an UPDATE) or a share (FOR UPDATE), not for rows
    # that merely reference the mailbox.
    rows = await conn.execute_query_dict(
        _numbered(sql + (" FOR NO KEY UPDATE" if pg else ""), pg), [mailbox_id, scope.firm_id]
    )
    if not rows:
        raise IntegrityError(f"mailbox {mailbox_id} was disconnected")
    return rows[0]["visibility"], rows[0]["created_by_id"]


async def store_messages(
    scope: FirmScope,
    items: Sequence[Item],
    own_addresses: Iterable[str] = (),
    mailbox_id: int | None = None,
    *,
    settings: Settings | None = None,
    auto_save_since: datetime | None = None,
) -> list[StoreOutcome]:
    """`store_message` for many messages (one fetched chunk) with few statements: the new
    ones are stored in one transaction (their INSERT skips the keys already stored, so no
    statement asks first). A message already stored, or seen twice in `items`, goes through
    `store_message` after it; so do all of them when the transaction failed on the data (a
    deadlock with another pass: rolled back whole, nothing half-written). A lost connection
    raises DBConnectionError: nothing of the chunk is written, the next pass stores it."""
    fresh: dict[str, Item] = {}
    later: list[Item] = []
    for parsed, accounts in items:
        if parsed.message_key in fresh:
            later.append((parsed, accounts))
        else:
            fresh[parsed.message_key] = (parsed, accounts)
    outcomes: list[StoreOutcome] = []
    if fresh:
        try:
            outcomes, taken = await _store_new(
                scope,
                list(fresh.values()),
                set(own_addresses),
                mailbox_id,
                settings,
                auto_save_since,
            )
        except Exception as exc:
            if connection_lost(exc):
                await renew_connections()
                raise DBConnectionError(
                    f"The database connection was lost while storing {len(fresh)} new "
                    "messages: none of them was stored; the next pass stores them."
                ) from exc
            if not isinstance(exc, IntegrityError | OperationalError):
                raise
            # Raced with another pass (on PostgreSQL maybe a deadlock of the two
            # transactions): rolled back whole, then one by one, as it sorts them out.
            outcomes, later = [], list(items)
        else:
            later = taken + later
    for parsed, accounts in later:
        outcomes.append(
            await store_message(
                scope,
                parsed,
                accounts,
                own_addresses,
                mailbox_id,
                settings=settings,
                auto_save_since=auto_save_since,
            )
        )
    return outcomes


async def _store_new(
    scope: FirmScope,
    items: Sequence[Item],
    own: set[str],
    mailbox_id: int | None,
    settings: Settings | None,
    auto_save_since: datetime | None,
) -> tuple[list[StoreOutcome], list[Item]]:
    """Messages of distinct keys, in one transaction with a few statements whatever their
    number: one multi-row INSERT of the messages (those whose key is stored already are left
    out and answered as `taken`), one of all their attachments, one of all the links;
    auto-save per message with files to save.

    Its rows are plain values (`message_values`), not Message instances: Model.__init__'s
    per-field pass cost more than the rest of the store; an inserted row's outcome gets its
    Message (`_stored`) once the INSERT gave its id."""
    thread_keys = await _thread_keys(scope, [parsed for parsed, _ in items])
    kept = [
        await attachments.keep(_stored_attachments(parsed), settings) if settings else []
        for parsed, _ in items
    ]
    serv_id = settings.mail_auth_serv_id if settings else None
    rows = [
        message_values(
            scope,
            parsed,
            own,
            mailbox_id,
            thread_key,
            sender_auth=parsed.sender_auth(serv_id) if settings else None,
        )
        for (parsed, _), thread_key in zip(items, thread_keys, strict=True)
    ]
    for row in rows:  # as a Message holds it: in the database's time zone
        row["sent_at"] = _SENT_AT.to_python_value(row["sent_at"])
    async with in_transaction() as conn:
        # Mail of a personal mailbox is private to its owner unless they shared its thread:
        # decided here, inside the transaction, by the mailbox and shares as they are now.
        visibility, owner = await _mailbox_now(conn, scope, mailbox_id)
        private_to = owner if visibility == MailboxVisibility.PERSONAL else None
        if private_to is not None:
            shared = await threads.shared_keys(private_to, thread_keys)
            for row in rows:
                row["private_to_id"] = None if row["thread_key"] in shared else private_to
        ids = await _insert_messages(conn, rows)
        taken = [item for i, item in enumerate(items) if i not in ids]
        chosen = sorted(ids)
        items = [items[i] for i in chosen]
        kept = [kept[i] for i in chosen]
        messages = [_stored(rows[i], ids[i]) for i in chosen]
        await attachments.record_many(
            scope, [(message.pk, files) for message, files in zip(messages, kept, strict=True)]
        )
        outcomes: list[StoreOutcome] = []
        for (parsed, accounts), message, files in zip(items, messages, kept, strict=True):
            if (
                settings is not None
                and files
                and message.private_to_id is None  # else once its thread is shared
                and _auto_saves(parsed, auto_save_since, message.sender_auth, settings)
            ):
                await attachments.auto_save(scope, message.pk, accounts, settings)
            outcomes.append(StoreOutcome(message, True, sorted(accounts)))
        await _insert_links(
            conn,
            [
                {
                    "firm_id": scope.firm_id,
                    "message_id": outcome.message.pk,
                    "account_id": account_id,
                    "sent_at": outcome.message.sent_at,
                }
                for outcome in outcomes
                for account_id in outcome.new_account_ids
            ],
        )
        await alerts.new_client_mail(scope, outcomes, settings, auto_save_since)
        await _announce(scope, outcomes)
    return outcomes, taken


async def _announce(scope: FirmScope, outcomes: Sequence[StoreOutcome]) -> None:
    """The message.synced webhook of each message linked to accounts now."""
    await emit.messages_synced(
        scope.firm_id,
        [
            (
                o.message.pk,
                o.message.mailbox_id,
                o.new_account_ids,
                o.message.direction,
                o.message.sent_at,
            )
            for o in outcomes
            if o.new_account_ids
        ],
    )


async def _insert_messages(
    conn: BaseDBAsyncClient, rows: Sequence[dict[str, Any]]
) -> dict[int, int]:
    """Inserts those of `rows` (the values of messages of distinct keys) whose key the firm
    has not stored yet, with one multi-row INSERT ... ON CONFLICT DO
    NOTHING RETURNING per INSERT_ROWS (PostgreSQL and SQLite alike), and sets their
    `created_at`; the id of each inserted row by its position."""
    created = _CREATED_AT.to_python_value(timezone.localtime())  # as Tortoise's save does
    for row in rows:
        row["created_at"] = created
    ids: dict[int, int] = {}
    for start in range(0, len(rows), INSERT_ROWS):
        part = rows[start : start + INSERT_ROWS]
        returned = await _insert(
            conn,
            Message,
            part,
            'ON CONFLICT ("firm_id", "message_key") DO NOTHING RETURNING "id", "message_key"',
        )
        by_key = {r["message_key"]: r["id"] for r in returned}
        for at, row in enumerate(part, start=start):
            if row["message_key"] in by_key:
                ids[at] = by_key[row["message_key"]]
    return ids


async def _insert_links(conn: BaseDBAsyncClient, rows: Sequence[dict[str, Any]]) -> None:
    """The links of new messages (their values), INSERT_ROWS to a multi-row INSERT."""
    for start in range(0, len(rows), INSERT_ROWS):
        await _insert(conn, MessageAccount, rows[start : start + INSERT_ROWS], "")


async def _insert(
    conn: BaseDBAsyncClient, model: type[Model], rows: Sequence[dict[str, Any]], tail: str
) -> list[dict[str, Any]]:
    """One multi-row INSERT of `rows` (each the values of `model`'s columns but its id, of
    their fields' types, as an instance holds them) then `tail` (ON CONFLICT, RETURNING), and
    the rows it returned. The values are converted as Tortoise's own bulk insert converts them
    (each field's `to_db_value`), a column at a time (`_column_converter`: the same values
    without a method call per value; Tortoise's bulk insert runs a statement per row)."""
    if not rows:
        return []
    names = conn.executor_class(model=model, db=conn).regular_columns
    fields = model._meta.fields_map
    columns = [_column_converter(fields[name])([row[name] for row in rows]) for name in names]
    values = list(itertools.chain.from_iterable(zip(*columns, strict=True)))
    sql = _insert_sql(
        model._meta.db_table,
        tuple(fields[name].source_field or name for name in names),
        len(rows),
        tail,
        conn.capabilities.dialect == "postgres",
    )
    return list(await conn.execute_query_dict(sql, values))  # rows, also on PostgreSQL


ColumnConverter = Callable[[list[Any]], list[Any]]
_NONE_TYPE = type(None)


@functools.cache
def _column_converter(field: Field) -> ColumnConverter:
    """What `field.to_db_value(value, None)` makes of each value of a column, as a plain
    function of the whole column: the column as it is where the stock method returns each
    value as it is (text and integers of the field's type, CharField's strings within its
    length, aware datetimes; JSON lists and dicts are only encoded), else the stock method
    per value (its conversions, errors and warnings). tests/test_store_rows.py compares
    each with the stock method."""
    stock = field.to_db_value

    def each(values: list[Any]) -> list[Any]:
        return [stock(value, None) for value in values]

    kind = type(field)
    plain = kind.to_db_value is Field.to_db_value
    if plain and not field.validators and isinstance(field.field_type, type):
        # Text, integers: the stock method converts values of other types only.
        own = {field.field_type, _NONE_TYPE}

        def same(values: list[Any]) -> list[Any]:
            return values if set(map(type, values)) <= own else each(values)

        return same
    if (
        plain
        and issubclass(kind, CharField)
        and field.field_type is str
        and [type(v) for v in field.validators] == [MaxLengthValidator]
    ):
        limit = field.validators[0].max_length
        allowed = {str, _NONE_TYPE} if field.null else {str}

        def text(values: list[Any]) -> list[Any]:
            # Strings (exactly str: an enum's value is its own) within the length pass as they
            # are; None too in a nullable column.
            kinds = set(map(type, values))
            if kinds == {str}:
                if max(map(len, values), default=0) <= limit:
                    return values
            elif kinds <= allowed and all(len(v) <= limit for v in values if v is not None):
                return values
            return each(values)

        return text
    if kind is JSONField and not field.validators:
        encode = field.encoder

        def encoded(values: list[Any]) -> list[Any]:
            if set(map(type, values)) <= {list, dict}:
                return list(map(encode, values))  # what the stock method does with them
            return each(values)

        return encoded
    if kind is DatetimeField and not field.validators and not field.auto_now:
        # auto_now_add acts on a Model instance only; with use_tz a naive datetime is made
        # aware (with a warning): the stock method does that.
        def moment(values: list[Any]) -> list[Any]:
            if not get_use_tz() or all(
                v.utcoffset() is not None for v in values if isinstance(v, datetime)
            ):
                return values
            return each(values)

        return moment
    return each


@functools.lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...], count: int, tail: str, pg: bool) -> str:
    """The text of a multi-row INSERT of `count` rows (the same few for every chunk)."""
    one = "(" + ", ".join("?" * len(columns)) + ")"
    names = ", ".join(f'"{column}"' for column in columns)
    sql = f'INSERT INTO "{table}" ({names}) VALUES ' + ", ".join([one] * count)
    sql += f" {tail}" if tail else ""
    return _numbered(sql, pg)


def _stored(values: dict[str, Any], pk: int) -> Message:
    """The Message of a row just inserted from `values` (with its `created_at`), as
    Message(**values) holds it once saved, without Model.__init__'s per-field pass (the
    values were converted and checked on their way in). Callers read it (the sync its pk,
    the alerts its pk, direction, sent_at, from_address, subject) and may save it again.
    tests/test_store_rows.py checks it against the row read back."""
    message = Message.__new__(Message)
    message.__dict__.update(
        values,
        id=pk,
        _partial=False,
        _saved_in_db=True,
        _custom_generated_pk=False,
        _await_when_save={},
    )
    return message


def _stored_attachments(parsed: ParsedMessage) -> list[ParsedAttachment]:
    """The attachments kept with `parsed`: none when its content is skipped."""
    return [] if parsed.content_skipped is not None else parsed.attachments


def _auto_saves(
    parsed: ParsedMessage, since: datetime | None, sender_auth: str | None, settings: Settings
) -> bool:
    """Whether the message's attachments are auto-saved (`attachments.auto_saves`)."""
    return attachments.auto_saves(parsed.sent_at, since, sender_auth, settings)


def message_row(
    scope: FirmScope,
    parsed: ParsedMessage,
    own: set[str],
    mailbox_id: int | None,
    thread_key: str,
    *,
    sender_auth: str | None = None,
    private_to: int | None = None,
) -> Message:
    """The (unsaved) Message of `parsed` in the thread `thread_key` (`message_values`)."""
    return Message(
        **message_values(
            scope,
            parsed,
            own,
            mailbox_id,
            thread_key,
            sender_auth=sender_auth,
            private_to=private_to,
        )
    )


def message_values(
    scope: FirmScope,
    parsed: ParsedMessage,
    own: set[str],
    mailbox_id: int | None,
    thread_key: str,
    *,
    sender_auth: str | None = None,
    private_to: int | None = None,
) -> dict[str, Any]:
    """The fields of the Message of `parsed` in the thread `thread_key`: OUTBOUND when it is
    from one of `own` (the firm's mailboxes' addresses), else INBOUND; `sender_auth` as read
    (`ParsedMessage.sender_auth`); private to `private_to` (services/mail/threads)."""
    from_us = bool(parsed.from_address) and parsed.from_address in own
    skipped = parsed.content_skipped is not None
    return {
        "firm_id": scope.firm_id,
        "message_id": parsed.message_id,
        "message_key": parsed.message_key,
        "thread_key": thread_key,
        "subject": parsed.subject,
        "from_address": parsed.from_address,
        "to_addresses": parsed.to,
        "cc_addresses": parsed.cc,
        "sent_at": parsed.sent_at,
        "text_body": None if skipped else parsed.text_body,
        "html_body": None if skipped else parsed.html_body,
        "content_skipped": parsed.content_skipped,
        "sender_auth": sender_auth,
        "direction": OUTBOUND if from_us else INBOUND,
        "references": parsed.reference_chain,
        "mailbox_id": mailbox_id,
        "private_to_id": private_to,
    }


def link_rows(
    scope: FirmScope, message: Message, account_ids: Iterable[int]
) -> list[MessageAccount]:
    """The (unsaved) links of `message` to each of `account_ids`."""
    return [
        MessageAccount(
            firm_id=scope.firm_id,
            message_id=message.pk,
            account_id=account_id,
            sent_at=message.sent_at,
        )
        for account_id in account_ids
    ]


async def _thread_keys(scope: FirmScope, messages: Sequence[ParsedMessage]) -> list[str]:
    """The thread of each of `messages`, in one query: the thread of the oldest message of its
    References/In-Reply-To chain the firm has (a message may answer one before it in the
    list: they are stored in that order), else same normalised subject and participants."""
    chains = [[message_key(mid) for mid in parsed.reference_chain] for parsed in messages]
    wanted = {key for chain in chains for key in chain}
    known: dict[str, str] = {}
    if wanted:
        # By hand, as `synced_accounts`: building the Tortoise query cost more than running it.
        conn = Tortoise.get_connection("default")
        sql = _numbered(
            'SELECT "message_key", "thread_key" FROM "message" WHERE "firm_id" = ? '
            f'AND "message_key" IN ({", ".join("?" * len(wanted))})',
            conn.capabilities.dialect == "postgres",
        )
        rows = await conn.execute_query_dict(sql, [scope.firm_id, *sorted(wanted)])
        known = {row["message_key"]: row["thread_key"] for row in rows}
    threads: list[str] = []
    for parsed, chain in zip(messages, chains, strict=True):
        thread = next((known[key] for key in chain if key in known), None)
        thread = thread or subject_thread_key(parsed.subject, parsed.participants)
        known.setdefault(parsed.message_key, thread)
        threads.append(thread)
    return threads
