"""EMAIL SYNC types: the firm's connected mailboxes, and the inbox right that guards them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry import relay
from strawberry.types import Info

from models import HistoryImport as HistoryImportModel
from models import Mailbox as MailboxModel
from models import MailboxSkip as MailboxSkipModel
from models import StaffMember as StaffMemberModel
from schema import ids
from schema.batched import loaded_field
from schema.enums import HistoryImportStatus, MailboxSyncStatus, MailboxVisibility
from schema.errors import UserError
from schema.pagination import check_page_size
from schema.types import ScopedNode, StaffMember

MAX_HISTORY_IMPORTS = 100


@strawberry.type(
    description="The import of one address's earlier mail from one mailbox, queued when "
    "EMAIL SYNC was turned on for the address."
)
class HistoryImport:
    id: strawberry.ID = strawberry.field(
        description="Stable and unique, for client caches; node(id:) does not resolve it."
    )
    address: str = strawberry.field(description="The address, lower-cased.")
    status: HistoryImportStatus = strawberry.field(
        description="Where the import stands (a FAILED import is tried again once the "
        "mailbox syncs again)."
    )
    found: int = strawberry.field(
        description="Messages the server matched in the last run (for every address of that "
        "run when several were imported together)."
    )
    imported: int = strawberry.field(
        description="Messages with this address stored or newly linked to an account."
    )
    last_error: str | None = strawberry.field(description="Why the last run failed.")
    created_at: datetime = strawberry.field(description="When EMAIL SYNC was turned on.")
    finished_at: datetime | None = strawberry.field(
        description="When the last run ended (DONE or FAILED); null while none has."
    )

    @classmethod
    def from_model(cls, row: HistoryImportModel) -> HistoryImport:
        return cls(
            id=strawberry.ID(ids.encode("HistoryImport", row.pk)),
            address=row.address_normalized,
            status=HistoryImportStatus(row.status),
            found=row.found,
            imported=row.imported,
            last_error=row.last_error,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )


@strawberry.type(
    description="A message of a mailbox the sync could not fetch, read or store. It is tried "
    "again on the next passes; once it has failed too often it is skipped (the rest of the "
    "mailbox syncs on) until retryAfter, when it is tried again."
)
class SkippedMessage:
    folder: str = strawberry.field(description="The IMAP folder, as the server names it.")
    uid: int = strawberry.field(description="Its IMAP UID in that folder.")
    reason: str = strawberry.field(description="Why the last attempt failed.")
    attempts: int = strawberry.field(description="How many attempts failed.")
    first_seen_at: datetime = strawberry.field(description="When it first failed.")
    last_attempt_at: datetime = strawberry.field(description="When it last failed.")
    skipped_at: datetime | None = strawberry.field(
        description="When it was given up on for a while; null: it is tried again next pass."
    )
    retry_after: datetime | None = strawberry.field(
        description="When a skipped message is tried again; null while not skipped."
    )

    @classmethod
    def from_model(cls, row: MailboxSkipModel) -> SkippedMessage:
        return cls(
            folder=row.folder,
            uid=row.uid,
            reason=row.reason,
            attempts=row.attempts,
            first_seen_at=row.first_seen_at,
            last_attempt_at=row.last_attempt_at,
            skipped_at=row.skipped_at,
            retry_after=row.retry_after,
        )


@strawberry.type(description="How far the current (or last) sync pass of a mailbox has read.")
class SyncProgress:
    done: int = strawberry.field(description="Messages read so far.")
    total: int = strawberry.field(
        description="Messages the pass has to read, as far as known (it grows as each folder "
        "is looked at)."
    )


@strawberry.type(
    description="An IMAP/SMTP mailbox of the firm whose mail is synced (staff with the inbox "
    "right). The password is never returned."
)
class Mailbox(ScopedNode):
    model = MailboxModel
    id: relay.NodeID[int]
    address: str = strawberry.field(description="The mailbox's email address, as connected.")
    imap_host: str = strawberry.field(description="The IMAP server's host name or IP address.")
    imap_port: int = strawberry.field(description="The IMAP server's TCP port.")
    sync_status: MailboxSyncStatus = strawberry.field(description="Where its sync stands.")
    last_synced_at: datetime | None = strawberry.field(
        description="When the last sync succeeded; null before the first."
    )
    last_error: str | None = strawberry.field(
        description="Why the last sync failed; null when it succeeded."
    )
    sync_progress: SyncProgress | None = strawberry.field(
        description="How far the current sync pass has read (the last pass's figures when "
        "none runs); null before the first pass."
    )
    visibility: MailboxVisibility = strawberry.field(
        description="SHARED (the whole firm reads its mail) or PERSONAL (its owner's)."
    )
    owner_id: strawberry.Private[int | None]

    @strawberry.field(
        description="Who connected a PERSONAL mailbox for themselves; null for a SHARED one."
    )
    async def owner(self, info: Info) -> StaffMember | None:
        if self.owner_id is None:
            return None
        row = await info.context.loaders.by_id(StaffMemberModel).load(self.owner_id)
        return StaffMember.from_model(row) if row is not None else None

    @strawberry.field(
        description="Messages that failed to sync (fetch, read or store) and are being "
        "retried or skipped, by folder and UID (at most 500)."
    )
    async def skipped_messages(self, info: Info) -> list[SkippedMessage]:
        rows = await info.context.loaders.skips_by_mailbox.load(self.id)
        return [SkippedMessage.from_model(row) for row in rows]

    @strawberry.field(
        description="Where the import of earlier mail stands for each address whose EMAIL "
        "SYNC was turned on: the latest import of each address, newest first."
    )
    async def history_imports(
        self,
        info: Info,
        first: Annotated[
            int,
            strawberry.argument(
                description=f"How many addresses, at most {MAX_HISTORY_IMPORTS} (default 20)."
            ),
        ] = 20,
    ) -> list[HistoryImport]:
        check_page_size(first, MAX_HISTORY_IMPORTS)
        rows = await info.context.loaders.history_latest.load((self.id, first))
        return [HistoryImport.from_model(row) for row in rows]

    history_pending: int = loaded_field(
        "history_unfinished", description="History imports waiting or running on this mailbox."
    )

    @classmethod
    def from_model(cls, row: MailboxModel) -> Mailbox:
        return cls(
            id=row.pk,
            address=row.address,
            imap_host=row.imap_host,
            imap_port=row.imap_port,
            sync_status=MailboxSyncStatus(row.sync_status),
            last_synced_at=row.last_synced_at,
            last_error=row.last_error,
            sync_progress=None
            if row.sync_total is None
            else SyncProgress(done=row.sync_done, total=row.sync_total),
            visibility=MailboxVisibility(row.visibility),
            owner_id=row.created_by_id if row.visibility == "PERSONAL" else None,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Mailbox | None]:
        """Staff of the firm with the inbox right; null for everyone else."""
        staff = info.context.staff
        if staff is None or not staff.uses_inbox:
            return [None for _ in node_ids]
        return await super().resolve_nodes(info=info, node_ids=node_ids, required=required)


@strawberry.input(description="A mailbox to connect; both logins are checked before it is saved.")
class ConnectMailboxInput:
    address: str = strawberry.field(description="The mailbox's email address.")
    imap_host: str = strawberry.field(description="The IMAP server's host name or IP address.")
    imap_port: int | None = strawberry.field(
        default=993, description="The IMAP server's TCP port (default 993)."
    )
    imap_tls: bool | None = strawberry.field(
        default=True, description="TLS from the first byte (IMAPS); false: plain IMAP."
    )
    smtp_host: str = strawberry.field(description="The SMTP server's host name or IP address.")
    smtp_port: int | None = strawberry.field(
        default=587, description="The SMTP server's TCP port (default 587)."
    )
    smtp_tls: bool | None = strawberry.field(
        default=True,
        description="Implicit TLS on port 465, STARTTLS on any other port; false: plain SMTP.",
    )
    username: str = strawberry.field(description="For IMAP and SMTP alike.")
    password: str = strawberry.field(description="Stored encrypted; never returned.")
    visibility: MailboxVisibility | None = strawberry.field(
        default=MailboxVisibility.SHARED,
        description="SHARED (default: the whole firm reads its mail) or PERSONAL (yours: its "
        "threads are private to you until you share one).",
    )


@strawberry.type(description="What a mailbox mutation did.")
class MailboxPayload:
    errors: list[UserError] = strawberry.field(
        description="Why nothing was done; empty on success."
    )
    mailbox: Mailbox | None = strawberry.field(
        default=None, description="The mailbox concerned; null on failure."
    )
