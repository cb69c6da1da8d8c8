"""Deleting synced mail: messages with their account links and attachments, then the
attachment contents nothing refers to any more.

Used by disconnectMailbox(deleteMessages: true) and by the other deletes that take mail with
them (deleteAccount, eraseContact). Two ways to call `delete_messages`:

- On its own (no transaction open): `await delete_messages(scope, ids, settings)` deletes
  the rows in a transaction of its own and, after that commits, removes the contents.
- Inside the caller's transaction: `sha256s = await delete_messages(scope, ids, settings,
  forget_files=False)` deletes the rows as part of that transaction (a savepoint within it)
  and removes no file; after the caller's transaction commits, it calls
  `await files.forget(settings, sha256s)`. Files must never go before the commit: a rollback
  would leave rows pointing at missing contents.

Documents saved from an attachment stay (they are the account's): their `attachment` is set
to null, and their content stays because they still refer to it (files.forget checks). A
reply queued in the outbox keeps going out; it no longer points at its thread's message.
"""

from __future__ import annotations

from collections.abc import Sequence

from tortoise.transactions import in_transaction

from models import Attachment, Document, Message, MessageAccount, OutboundEmail
from portico.settings import Settings
from services.shared import files
from services.shared.scope import FirmScope

CHUNK = 500  # ids per statement: well below every database's limit on bound parameters


async def delete_messages(
    scope: FirmScope,
    message_ids: Sequence[int],
    settings: Settings,
    *,
    forget_files: bool = True,
) -> set[str]:
    """Deletes the firm's messages among `message_ids` (another firm's ids are ignored) with
    their account links and attachments; the SHA-256s of the deleted attachments' contents.
    With `forget_files` (the default; call it outside any transaction) the contents nothing
    else refers to are removed after the commit. With `forget_files=False` it joins the
    caller's transaction and the caller passes the answer to `files.forget` after its commit."""
    wanted = sorted(set(message_ids))
    sha256s: set[str] = set()
    async with in_transaction():
        for start in range(0, len(wanted), CHUNK):
            sha256s |= await _delete_chunk(scope, wanted[start : start + CHUNK])
    if forget_files:
        await files.forget(settings, sha256s)
    return sha256s


async def _delete_chunk(scope: FirmScope, wanted: list[int]) -> set[str]:
    ids = list(await scope.query(Message).filter(id__in=wanted).values_list("id", flat=True))
    if not ids:
        return set()
    attachments = scope.query(Attachment).filter(message_id__in=ids)
    rows = await attachments.values_list("id", "sha256")
    attachment_ids = [row_id for row_id, _ in rows]
    sha256s = {sha256 for _, sha256 in rows if sha256}
    # The foreign keys (enforced on both databases) would do these too, and they remove the
    # rows of any other table pointing at a message (e.g. staff alert notices); the rows
    # named here are said outright so that this module reads as what a delete takes.
    if attachment_ids:
        await (
            scope.query(Document)
            .filter(attachment_id__in=attachment_ids)
            .update(attachment_id=None)
        )
    await (
        scope.query(OutboundEmail).filter(thread_message_id__in=ids).update(thread_message_id=None)
    )
    await attachments.delete()
    await scope.query(MessageAccount).filter(message_id__in=ids).delete()
    await scope.query(Message).filter(id__in=ids).delete()
    return sha256s
