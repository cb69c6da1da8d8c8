"""Messages the sync could not fetch, parse or store: their attempts, and the skipped ones.

A message that fails (the server refuses to FETCH it or sends nothing for a UID it still
has, parsing raises, or its store fails with a data error) gets an attempt recorded in a
MailboxSkip row, keyed by mailbox, folder, UIDVALIDITY and UID (`failed`). The pass goes on
with the other messages, and the folder's cursor moves past the message: the row is what
brings it back. While it has failed fewer than `sync_max_failures` times it is due at the
start of the folder's next pass (`of_folder`); at the last allowed failure it is skipped:
`skipped_at` set and `retry_after` a `sync_skip_retry_hours` later, when it is due again.
(Holding the cursor at the failing UID instead would read every later message again on each
pass: the whole rest of a 50,000-message folder, three times.) A retried message that goes
through loses its row (`cleared`); one whose folder's UIDVALIDITY changed is forgotten with
it (`forget_other_uidvalidity`: the UID names another message now). The rows are shown on the
mailbox (Mailbox.skippedMessages, loaded for a page of mailboxes at once: `of_mailboxes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from models import MailboxSkip
from portico.settings import Settings
from services.shared import sql
from services.shared.scope import FirmScope

MAX_REASON = 1000  # characters
MAX_LISTED = 500  # rows shown on a mailbox


async def failed(
    scope: FirmScope,
    mailbox_id: int,
    folder: str,
    uidvalidity: int | None,
    uid: int,
    reason: str,
    settings: Settings,
) -> MailboxSkip:
    """Records one failed attempt at a message; skips it once it has failed too often."""
    now = datetime.now(UTC)
    reason = reason[:MAX_REASON]
    row = await MailboxSkip.get_or_none(
        mailbox_id=mailbox_id, folder=folder, uidvalidity=uidvalidity, uid=uid
    )
    if row is None:
        row = MailboxSkip(
            firm_id=scope.firm_id,
            mailbox_id=mailbox_id,
            folder=folder,
            uidvalidity=uidvalidity,
            uid=uid,
            reason=reason,
            attempts=1,
            last_attempt_at=now,
        )
    else:
        row.attempts += 1
        row.reason, row.last_attempt_at = reason, now
    if row.attempts >= settings.sync_max_failures:
        row.skipped_at = now
        row.retry_after = now + timedelta(hours=settings.sync_skip_retry_hours)
    await row.save()
    return row


async def of_folder(
    mailbox_id: int, folder: str, uidvalidity: int | None
) -> tuple[list[int], set[int]]:
    """The folder's UIDs to try again in this pass (not skipped yet, or skipped and past
    their retry_after), and every UID it has a row for (the others are left out of the
    pass's new messages: a skipped one is not read until its time comes)."""
    now = datetime.now(UTC)
    rows = await MailboxSkip.filter(
        mailbox_id=mailbox_id, folder=folder, uidvalidity=uidvalidity
    ).values_list("uid", "skipped_at", "retry_after")
    due = sorted(
        uid for uid, skipped_at, retry_after in rows if skipped_at is None or retry_after <= now
    )
    return due, {uid for uid, _, _ in rows}


async def cleared(
    mailbox_id: int, folder: str, uidvalidity: int | None, uids: Sequence[int]
) -> None:
    """The retried messages that went through (or are gone from the server): no longer due."""
    if uids:
        await MailboxSkip.filter(
            mailbox_id=mailbox_id, folder=folder, uidvalidity=uidvalidity, uid__in=list(uids)
        ).delete()


async def forget_other_uidvalidity(mailbox_id: int, folder: str, uidvalidity: int | None) -> None:
    """The folder's UIDVALIDITY changed: its UIDs name other messages now."""
    await (
        MailboxSkip.filter(mailbox_id=mailbox_id, folder=folder)
        .exclude(uidvalidity=uidvalidity)
        .delete()
    )


async def of_mailboxes(
    scope: FirmScope, mailbox_ids: Sequence[int]
) -> dict[int, list[MailboxSkip]]:
    """Each mailbox's failing and skipped messages, by folder and UID, at most MAX_LISTED a
    mailbox: one statement for all of them (a page of mailboxes), the cap per mailbox kept
    by the database (ROW_NUMBER, PostgreSQL and SQLite 3.25+)."""
    found: dict[int, list[MailboxSkip]] = {m: [] for m in mailbox_ids}
    if not mailbox_ids:
        return found
    columns = (
        "id, mailbox_id, folder, uidvalidity, uid, reason, attempts, first_seen_at,"
        " last_attempt_at, skipped_at, retry_after"
    )
    rows = await sql.select(
        f"SELECT {columns} FROM (SELECT {columns}, ROW_NUMBER() OVER"
        " (PARTITION BY mailbox_id ORDER BY folder, uid) AS n FROM mailbox_skip"
        f" WHERE firm_id = ? AND mailbox_id IN ({sql.marks(len(mailbox_ids))})) listed"
        " WHERE n <= ? ORDER BY mailbox_id, folder, uid",
        [scope.firm_id, *mailbox_ids, MAX_LISTED],
    )
    for row in rows:
        found[row[1]].append(
            MailboxSkip(
                id=row[0],
                firm_id=scope.firm_id,
                mailbox_id=row[1],
                folder=row[2],
                uidvalidity=row[3],
                uid=row[4],
                reason=row[5],
                attempts=row[6],
                first_seen_at=sql.utc(row[7]),
                last_attempt_at=sql.utc(row[8]),
                skipped_at=sql.utc_or_none(row[9]),
                retry_after=sql.utc_or_none(row[10]),
            )
        )
    return found
