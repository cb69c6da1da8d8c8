"""Storing synced mail: once per firm, linked to the accounts it concerns, in its thread.

A message is kept (unique on firm + SHA-256 of the Message-ID) when a participant (From, To,
Cc) has EMAIL SYNC on in some account of the firm (`synced_accounts`), and linked to every
such account. A message seen again (another folder or mailbox, a rescan) gains the accounts
that are new since. OUTBOUND when it is from one of the firm's mailboxes, else INBOUND.

One path writes new messages (`_store_new`): their attachments' files first
(services/mail/attachments.keep), then in one transaction the rows (`message_row`, which
replies use too), their attachments, the auto-saved Documents and the links.
`store_messages` sends one fetched chunk through it at once; `store_message` one message,
and the chunk's messages one by one when another pass stored one of them meanwhile.

A message whose content is skipped (`ParsedMessage.content_skipped`: read from its headers
alone, e.g. over the size limit) is stored with the reason and no bodies or attachments.

Auto-save: a message sent since `auto_save_since` (mail sent since the mailbox was
connected: "attachments of future synced mail") has its kept attachments saved into the
Documents of each account it is linked to (when stored, or linked later) whose auto-save
attachments option is on, unless its sender failed authentication.

Sender authentication (`Message.sender_auth`): the DMARC result of the Authentication-Results
header the firm's receiving server added (settings.mail_auth_serv_id; unset: the topmost
header), PASS, FAIL or None (`ParsedMessage.sender_auth`). FAIL refuses auto-save; with
settings.mail_auth_strict anything but PASS does. Such mail is still stored and linked. When a
message is linked later (another copy of it), the stored row's verdict decides: its
attachments are the ones that would be saved.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from tortoise import Tortoise
from tortoise.exceptions import DBConnectionError, IntegrityError, OperationalError
from tortoise.transactions import in_transaction

from models import AccountEmail, Message, MessageAccount
from portico.settings import Settings
from services.mail import alerts, attachments
from services.mail.parse import ParsedAttachment, ParsedMessage, message_key, subject_thread_key
from services.shared.scope import FirmScope

AUTO_SAVE_SLACK = timedelta(hours=1)
INSERT_ROWS = 200  # messages per INSERT statement (17 values each: within SQLite's limit)
INBOUND = "INBOUND"
OUTBOUND = "OUTBOUND"

# asyncpg's words for a connection that went away (terminated, closed mid-operation).
_LOST = (
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)

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
    wanted = list(set(addresses))
    if not wanted:
        return {}
    rows = await (
        scope.query(AccountEmail)
        .filter(
            email_sync=True,
            email_address__address_normalized__in=wanted,
            account__archived_at=None,
        )
        .values_list("email_address__address_normalized", "account_id")
    )
    found: dict[str, set[int]] = {}
    for address, account_id in rows:
        found.setdefault(address, set()).add(account_id)
    return found


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
            [outcome] = await _store_new(
                scope,
                [(parsed, accounts)],
                set(own_addresses),
                mailbox_id,
                settings,
                auto_save_since,
            )
            return outcome
        except IntegrityError:
            # Stored meanwhile by another pass (another mailbox with the same message).
            existing = await scope.query(Message).get(message_key=parsed.message_key)
    linked = set(
        await MessageAccount.filter(message_id=existing.pk).values_list("account_id", flat=True)
    )
    new = sorted(accounts - linked)
    if new:
        async with in_transaction():
            await MessageAccount.bulk_create(link_rows(scope, existing, new), ignore_conflicts=True)
            if settings is not None and _auto_saves(
                parsed, auto_save_since, existing.sender_auth, settings
            ):
                await attachments.auto_save(scope, existing.pk, new, settings)
    return StoreOutcome(existing, False, new)


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
    ones are stored in one transaction. A message already stored, or seen twice in `items`,
    goes through `store_message`; so do all of them when another pass stored one meanwhile
    (the transaction is then rolled back whole and nothing is half-written)."""
    existing = set(
        await scope.query(Message)
        .filter(message_key__in=[parsed.message_key for parsed, _ in items])
        .values_list("message_key", flat=True)
    )
    fresh: dict[str, Item] = {}
    later: list[Item] = []
    for parsed, accounts in items:
        if parsed.message_key in existing or parsed.message_key in fresh:
            later.append((parsed, accounts))
        else:
            fresh[parsed.message_key] = (parsed, accounts)
    outcomes: list[StoreOutcome] = []
    if fresh:
        try:
            outcomes = await _store_new(
                scope,
                list(fresh.values()),
                set(own_addresses),
                mailbox_id,
                settings,
                auto_save_since,
            )
        except Exception as exc:
            if _connection_lost(exc):
                await _renew_connections()
                raise DBConnectionError(
                    f"The database connection was lost while storing {len(fresh)} new "
                    "messages: none of them was stored; the next pass stores them."
                ) from exc
            if not isinstance(exc, IntegrityError | OperationalError):
                raise
            # Raced with another pass (a duplicate key; on PostgreSQL maybe a deadlock of the
            # two transactions): rolled back whole, then one by one, as it sorts them out.
            later = list(items)
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
) -> list[StoreOutcome]:
    """Messages none of which is stored yet, in one transaction (IntegrityError when another
    pass stored one meanwhile), with a few statements whatever their number: one multi-row
    INSERT of the messages (then their ids by key), one of all their attachments, one of all
    the links; auto-save per message with files to save."""
    threads = await _thread_keys(scope, [parsed for parsed, _ in items])
    kept = [
        await attachments.keep(_stored_attachments(parsed), settings) if settings else []
        for parsed, _ in items
    ]
    serv_id = settings.mail_auth_serv_id if settings else None
    rows = [
        message_row(
            scope,
            parsed,
            own,
            mailbox_id,
            thread_key,
            sender_auth=parsed.sender_auth(serv_id) if settings else None,
        )
        for (parsed, _), thread_key in zip(items, threads, strict=True)
    ]
    async with in_transaction():
        await _insert_messages(scope, rows)
        await attachments.record_many(
            scope, [(row.pk, files) for row, files in zip(rows, kept, strict=True)]
        )
        outcomes: list[StoreOutcome] = []
        for (parsed, accounts), row, files in zip(items, rows, kept, strict=True):
            if (
                settings is not None
                and files
                and _auto_saves(parsed, auto_save_since, row.sender_auth, settings)
            ):
                await attachments.auto_save(scope, row.pk, accounts, settings)
            outcomes.append(StoreOutcome(row, True, sorted(accounts)))
        await MessageAccount.bulk_create(
            [
                link
                for outcome in outcomes
                for link in link_rows(scope, outcome.message, outcome.new_account_ids)
            ]
        )
        await alerts.new_client_mail(scope, outcomes, settings, auto_save_since)
    return outcomes


async def _insert_messages(scope: FirmScope, rows: Sequence[Message]) -> None:
    """Inserts `rows` (new messages of distinct keys) with one multi-row INSERT per
    INSERT_ROWS, then gives each its id, read back by key (a bulk insert returns none)."""
    if len(rows) == 1:
        await rows[0].save()  # one statement either way
        return
    for start in range(0, len(rows), INSERT_ROWS):
        await Message.bulk_create(rows[start : start + INSERT_ROWS])
    ids = dict(
        await scope.query(Message)
        .filter(message_key__in=[row.message_key for row in rows])
        .values_list("message_key", "id")
    )
    for row in rows:
        row.pk = ids[row.message_key]
        row._saved_in_db = True  # an update from now on, never a second insert


async def _renew_connections() -> None:
    """After a lost connection, every pooled connection to PostgreSQL is replaced on its next
    use: the server may have cut them all (restart, failover, pg_terminate_backend), and one
    left mid-rollback must not serve the next statement (the pass's error is written next)."""
    pool = getattr(Tortoise.get_connection("default"), "_pool", None)
    if isinstance(pool, asyncpg.Pool):
        await pool.expire_connections()


def _connection_lost(exc: BaseException) -> bool:
    """Whether `exc` (or what it arose from: a failed rollback hides the first error) is the
    database connection going away, rather than the data being refused."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (OSError, DBConnectionError, *_LOST)):
            return True
        current = current.__cause__ or current.__context__
    return False


def _stored_attachments(parsed: ParsedMessage) -> list[ParsedAttachment]:
    """The attachments kept with `parsed`: none when its content is skipped."""
    return [] if parsed.content_skipped is not None else parsed.attachments


def _auto_saves(
    parsed: ParsedMessage, since: datetime | None, sender_auth: str | None, settings: Settings
) -> bool:
    """Whether the message is "future synced mail" whose attachments are auto-saved: sent
    since `since`, give or take AUTO_SAVE_SLACK (the Date header is the sender's clock, and
    mail may take a while to arrive), from a sender that did not fail authentication
    (`sender_auth`; with mail_auth_strict, one that passed it)."""
    if since is None or parsed.sent_at < since - AUTO_SAVE_SLACK:
        return False
    return sender_auth == "PASS" if settings.mail_auth_strict else sender_auth != "FAIL"


def message_row(
    scope: FirmScope,
    parsed: ParsedMessage,
    own: set[str],
    mailbox_id: int | None,
    thread_key: str,
    *,
    sender_auth: str | None = None,
) -> Message:
    """The (unsaved) Message of `parsed` in the thread `thread_key`: OUTBOUND when it is from
    one of `own` (the firm's mailboxes' addresses), else INBOUND; `sender_auth` as read
    (`ParsedMessage.sender_auth`)."""
    from_us = bool(parsed.from_address) and parsed.from_address in own
    skipped = parsed.content_skipped is not None
    return Message(
        firm_id=scope.firm_id,
        message_id=parsed.message_id,
        message_key=parsed.message_key,
        thread_key=thread_key,
        subject=parsed.subject,
        from_address=parsed.from_address,
        to_addresses=parsed.to,
        cc_addresses=parsed.cc,
        sent_at=parsed.sent_at,
        text_body=None if skipped else parsed.text_body,
        html_body=None if skipped else parsed.html_body,
        content_skipped=parsed.content_skipped,
        sender_auth=sender_auth,
        direction=OUTBOUND if from_us else INBOUND,
        references=parsed.reference_chain,
        mailbox_id=mailbox_id,
    )


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
        known = dict(
            await scope.query(Message)
            .filter(message_key__in=list(wanted))
            .values_list("message_key", "thread_key")
        )
    threads: list[str] = []
    for parsed, chain in zip(messages, chains, strict=True):
        thread = next((known[key] for key in chain if key in known), None)
        thread = thread or subject_thread_key(parsed.subject, parsed.participants)
        known.setdefault(parsed.message_key, thread)
        threads.append(thread)
    return threads
