"""Private mail threads: who may read a synced message's content, and sharing a thread.

A mailbox is SHARED (the whole firm reads its mail) or PERSONAL (connected by a staff member
for themselves: `Mailbox.created_by` is its owner). A message is private when it was stored
through a PERSONAL mailbox and its owner has not shared its thread: `Message.private_to`
names the owner. The column is kept up to date by every change that decides it (storing,
`share_thread`, `unshare_thread`, `set_visibility`), so reading never needs a join or a
query per message: `Reader.hides(message.private_to_id)` is the one rule every field that
returns content (bodies, attachments and their documents) applies.

Who reads a private message's content: its owner; also the firm's owners when the firm set
`owners_see_all_mail` (off by default). Everyone else with the inbox right (admins too) sees
that it exists (subject, participants, date) with its content hidden.

A shared thread is remembered (`SharedThread`, per owner and thread): mail arriving later in
it through the owner's personal mailbox is shared as it is stored. The store decides inside
its transaction with the mailbox's row locked; a switch and a share lock the same rows first,
so stored privacy follows the state at commit time. A message a SHARED mailbox also holds is
not private (services/mail/store). An owner or admin of the firm shares or unshares a
deactivated member's threads for them (else nobody could). Attachments of a private
message are not auto-saved into an account's Documents while it is private; sharing saves
them, as the store would have (`attachments.auto_saves`). Unsharing makes the thread private
again; documents saved meanwhile stay (they are the client's account's now).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models import (
    Attachment,
    Firm,
    Mailbox,
    MailboxVisibility,
    Message,
    MessageAccount,
    SharedThread,
    StaffMember,
    StaffRole,
)
from portico.settings import Settings
from services.mail import attachments
from services.shared.errors import ErrorCode, Forbidden, input_error
from services.shared.scope import FirmScope

THREAD_KEY_LENGTH = 64  # Message.thread_key: a SHA-256 in hex
# Message ids per UPDATE when sharing many at once (a switch to SHARED, a long thread): far
# within SQLite's 32766 and asyncpg's 32767 parameters. Tests make it small.
UPDATE_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Reader:
    """Whose eyes synced mail is read through: a staff member (None: nobody in particular,
    as a group of subscribers shares one execution) and whether they read every private
    thread (an owner of a firm with owners_see_all_mail)."""

    staff_id: int | None
    sees_all: bool = False

    def hides(self, private_to: int | None) -> bool:
        """Whether a message private to `private_to` (None: not private) has its content
        hidden from this reader."""
        return private_to is not None and not self.sees_all and private_to != self.staff_id


NOBODY = Reader(None)  # reads no private message: for callers that act for no one in particular


def reader(staff: StaffMember, firm: Firm) -> Reader:
    """The reader a staff member of `firm` is."""
    return Reader(staff.pk, sees_all=owner_sees_all(staff, firm))


def owner_sees_all(staff: StaffMember, firm: Firm) -> bool:
    return staff.role == StaffRole.OWNER and firm.owners_see_all_mail


def group_reader(role: str, firm: Firm) -> Reader:
    """The reader for many staff members of one role at once: none of them the owner of a
    private message (an owner of one is served on their own)."""
    return Reader(None, sees_all=role == StaffRole.OWNER and firm.owners_see_all_mail)


async def shared_keys(owner_id: int, thread_keys: Iterable[str]) -> set[str]:
    """Those of `thread_keys` that `owner_id` shared (one query)."""
    wanted = sorted(set(thread_keys))
    if not wanted:
        return set()
    return set(
        await SharedThread.filter(owner_id=owner_id, thread_key__in=wanted).values_list(
            "thread_key", flat=True
        )
    )


def _owned(owner_ids: Sequence[int], thread_key: str) -> Q:
    """The messages of the thread that are these members' to share: private to them, or
    stored through one of their personal mailboxes."""
    return Q(thread_key=thread_key) & (
        Q(private_to_id__in=list(owner_ids))
        | Q(
            mailbox__created_by_id__in=list(owner_ids),
            mailbox__visibility=MailboxVisibility.PERSONAL,
        )
    )


async def _owners(scope: FirmScope, staff: StaffMember, thread_key: str) -> list[int]:
    """Whose mail of the thread `staff` shares or unshares: their own; for an owner or admin
    of the firm, a deactivated member's too (else nobody could ever share it). NOT_FOUND for
    a thread the firm does not have; FORBIDDEN for one the viewer may see but that is not
    theirs (its mailbox's owner alone shares it)."""
    if len(thread_key) <= THREAD_KEY_LENGTH:
        if await scope.query(Message).filter(_owned([staff.pk], thread_key)).exists():
            return [staff.pk]
        if staff.is_admin:
            gone = list(
                await scope.query(StaffMember).filter(active=False).values_list("id", flat=True)
            )
            if gone:
                found = (
                    await scope.query(Message)
                    .filter(_owned(gone, thread_key))
                    .values_list("private_to_id", "mailbox__created_by_id")
                )
                owners = sorted({o for pair in found for o in pair if o in gone})
                if owners:
                    return owners
        # Shared once, its mail's mailbox since disconnected: theirs (unsharing says so).
        if await SharedThread.filter(owner_id=staff.pk, thread_key=thread_key).exists():
            return [staff.pk]
        if await scope.query(Message).filter(thread_key=thread_key).exists():
            raise Forbidden("Only the owner of the personal mailbox may share this thread.")
    raise input_error(ErrorCode.NOT_FOUND, "No such thread.", "threadId")


async def _lock_mailboxes(scope: FirmScope, owner_ids: Sequence[int]) -> list[Mailbox]:
    """The mailboxes the members connected, their rows locked (PostgreSQL, in id order): a
    sync pass storing their mail (services/mail/store locks its mailbox's row) commits
    wholly before or after a share, so it never stores mail of a thread as the share found
    it before."""
    return list(
        await scope.query(Mailbox)
        .filter(created_by_id__in=list(owner_ids))
        .order_by("id")
        .select_for_update()
    )


async def share_thread(
    scope: FirmScope, staff: StaffMember, thread_key: str, settings: Settings
) -> None:
    """The thread's mail from `staff`'s personal mailboxes (or a deactivated member's, for
    an owner or admin) becomes readable by the firm, now and as more arrives; its
    attachments are auto-saved as the store would have done."""
    owners = await _owners(scope, staff, thread_key)
    async with in_transaction():
        await _lock_mailboxes(scope, owners)
        await SharedThread.bulk_create(
            [
                SharedThread(firm_id=scope.firm_id, owner_id=owner, thread_key=thread_key)
                for owner in owners
            ],
            ignore_conflicts=True,
        )
        released = await (
            scope.query(Message)
            .filter(thread_key=thread_key, private_to_id__in=owners)
            .values_list("id", flat=True)
        )
        await release(scope, released, settings)


async def unshare_thread(scope: FirmScope, staff: StaffMember, thread_key: str) -> None:
    """The thread's mail from `staff`'s personal mailboxes (or a deactivated member's, for
    an owner or admin) is private to them again (mail of the thread that came through a
    shared mailbox stays shared). MAILBOX_DISCONNECTED when the thread was shared and none
    of its mail is in their personal mailboxes any more: nothing says which of the kept
    mail was theirs, so it cannot be taken back."""
    owners = await _owners(scope, staff, thread_key)
    async with in_transaction():
        boxes = [
            b
            for b in await _lock_mailboxes(scope, owners)
            if b.visibility == MailboxVisibility.PERSONAL
        ]
        reached = bool(boxes) and (
            await scope.query(Message)
            .filter(thread_key=thread_key, mailbox_id__in=[b.pk for b in boxes])
            .exists()
        )
        if not reached:
            if await SharedThread.filter(owner_id__in=owners, thread_key=thread_key).exists():
                raise input_error(
                    ErrorCode.MAILBOX_DISCONNECTED,
                    "This thread's mail came through a personal mailbox that was disconnected: "
                    "it stays shared.",
                    "threadId",
                )
            return  # private already
        await SharedThread.filter(owner_id__in=owners, thread_key=thread_key).delete()
        for owner in owners:
            mine = [b.pk for b in boxes if b.created_by_id == owner]
            if mine:
                await (
                    scope.query(Message)
                    .filter(thread_key=thread_key, mailbox_id__in=mine)
                    .update(private_to_id=owner)
                )


async def release(scope: FirmScope, message_ids: Sequence[int], settings: Settings) -> None:
    """Makes the messages shared (inside the caller's transaction) and saves their kept
    attachments into the Documents of their accounts that auto-save (`save_released`), in
    statements of at most UPDATE_CHUNK ids each, whatever their number."""
    ids = sorted(set(message_ids))
    for start in range(0, len(ids), UPDATE_CHUNK):
        part = ids[start : start + UPDATE_CHUNK]
        await scope.query(Message).filter(id__in=part).update(private_to_id=None)
        await save_released(scope, part, settings)


async def save_released(scope: FirmScope, message_ids: Sequence[int], settings: Settings) -> None:
    """Saves the kept attachments of messages just made shared (at most UPDATE_CHUNK) into
    the Documents of their accounts that auto-save, where the store would have saved them
    (mail sent since its mailbox was connected, from a sender that did not fail
    authentication)."""
    if not message_ids:
        return
    with_files = await (
        scope.query(Attachment)
        .filter(message_id__in=list(message_ids), sha256__not_isnull=True)
        .distinct()
        .values_list("message_id", flat=True)
    )
    if not with_files:
        return
    rows = await (
        scope.query(Message).filter(id__in=sorted(set(with_files))).select_related("mailbox")
    )
    for row in rows:
        since = row.mailbox.created_at if row.mailbox is not None else None
        if not attachments.auto_saves(row.sent_at, since, row.sender_auth, settings):
            continue
        accounts = await MessageAccount.filter(message_id=row.pk).values_list(
            "account_id", flat=True
        )
        await attachments.auto_save(scope, row.pk, accounts, settings)


def sends_for(mailbox: Mailbox, reader: Reader) -> bool:
    """Whether a reply of `reader` may go out through (and be filed in) `mailbox`: a SHARED
    one, or their own PERSONAL one, never a colleague's."""
    return mailbox.visibility != MailboxVisibility.PERSONAL or (
        reader.staff_id is not None and mailbox.created_by_id == reader.staff_id
    )


def check_manages(mailbox: Mailbox, staff: StaffMember | None, *, owner_only: bool) -> None:
    """FORBIDDEN for a colleague's PERSONAL mailbox: only its owner changes its logins or
    deletes its mail; an owner or admin of the firm may still disconnect it (a member who
    left), its mail kept and private. The CLI (no staff) may do anything."""
    if staff is None or mailbox.visibility != MailboxVisibility.PERSONAL:
        return
    if mailbox.created_by_id == staff.pk or (staff.is_admin and not owner_only):
        return
    raise Forbidden("This mailbox is a colleague's personal one: only its owner may do that.")


def check_switch(
    mailbox: Mailbox, visibility: MailboxVisibility, staff: StaffMember | None
) -> None:
    """FORBIDDEN unless `staff` connected the mailbox (or nothing changes): a PERSONAL
    mailbox is its owner's, and only they decide whether the firm reads it."""
    if visibility != mailbox.visibility and (staff is None or mailbox.created_by_id != staff.pk):
        raise Forbidden("Only the staff member who connected this mailbox may change who reads it.")


async def set_visibility(
    scope: FirmScope,
    mailbox: Mailbox,
    visibility: MailboxVisibility,
    staff: StaffMember | None,
    settings: Settings,
) -> bool:
    """Switches a mailbox between SHARED and PERSONAL (the staff member who connected it
    only), its row locked first, inside the caller's transaction (a sync pass storing
    through it commits wholly before or after: services/mail/store). SHARED makes all its
    stored mail readable by the firm (and saves attachments held back); PERSONAL changes no
    stored mail: what the firm could read stays readable (its owner may unshare threads),
    mail stored from now on is private but for the threads they shared. Whether it changed."""
    check_switch(mailbox, visibility, staff)
    locked = await scope.query(Mailbox).filter(id=mailbox.pk).select_for_update().first()
    if locked is None:
        raise input_error(ErrorCode.NOT_FOUND, "No such Mailbox.", "id")  # disconnected
    if visibility == locked.visibility:
        return False
    mailbox.visibility = visibility
    await mailbox.save(update_fields=["visibility"])
    if visibility == MailboxVisibility.SHARED:
        held = await (
            scope.query(Message)
            .filter(mailbox_id=mailbox.pk, private_to_id__not_isnull=True)
            .values_list("id", flat=True)
        )
        await release(scope, held, settings)
    return True
