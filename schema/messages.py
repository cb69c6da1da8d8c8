"""Synced mail as the API shows it (staff with the inbox right; clients never see it)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import strawberry
from strawberry import relay
from strawberry.relay import PageInfo
from strawberry.types import Info

from models import Attachment as AttachmentModel
from models import Message as MessageModel
from schema import ids
from schema.batched import batched_field, loaded_field
from schema.delivery import Delivery
from schema.enums import DeliveryStatus, MessageDirection, SenderAuthentication
from schema.errors import UserError
from schema.pagination import Connection, Edge, bad_input, check_page_size
from schema.permissions import UsesInbox
from schema.types import Account, Document, ScopedNode
from services.mail import message_pages, parse
from services.mail.threads import Reader
from services.shared.errors import InputError


@strawberry.type(description="A file attached to a synced message.")
class Attachment:
    filename: str = strawberry.field(description="The file's name, made safe (no path).")
    content_type: str = strawberry.field(description="As the message declared it.")
    size: int = strawberry.field(description="Bytes, also when the file was not kept.")
    skipped_reason: str | None = strawberry.field(
        description="Why the file was not kept (too large, unreadable); null when it was."
    )
    row_id: strawberry.Private[int]
    message_id: strawberry.Private[int]
    sha256: strawberry.Private[str | None]

    @classmethod
    def from_model(cls, row: AttachmentModel) -> Attachment:
        return cls(
            filename=row.filename,
            content_type=row.content_type,
            size=row.size,
            skipped_reason=row.skipped_reason,
            row_id=row.pk,
            message_id=row.message_id,
            sha256=row.sha256,
        )

    @strawberry.field(
        description="Stable and unique, for client caches; node(id:) does not resolve it."
    )
    def id(self) -> strawberry.ID:
        return strawberry.ID(ids.encode("Attachment", self.row_id))

    @strawberry.field(
        description="The document of an account of this message that holds this file (saved "
        "from it when the account auto-saves attachments); null when no account has it."
    )
    async def document(self, info: Info) -> Document | None:
        if self.sha256 is None:
            return None  # not kept: no document can hold it
        key = (self.row_id, self.message_id, self.sha256)
        return await info.context.loaders.documents_by_attachment.load(key)  # loaded as nodes


async def _attachments_of(context: Any, messages: Sequence[Message]) -> list[list[Attachment]]:
    """Each message's attachments; none for a message whose content is hidden (not loaded)."""
    shown = [m.id for m in messages if not m.content_hidden]
    loaded = iter(await context.loaders.attachments_by_message.load_many(shown) if shown else [])
    return [[] if m.content_hidden else next(loaded) for m in messages]


@strawberry.type(description="A message synced from (or sent through) a connected mailbox.")
class Message(ScopedNode):
    model = MessageModel
    id: relay.NodeID[int]
    subject: str = strawberry.field(description="The Subject header, decoded.")
    from_: str = strawberry.field(name="from", description="The sender's address.")
    to: list[str] = strawberry.field(description="The To addresses.")
    cc: list[str] = strawberry.field(description="The Cc addresses.")
    sent_at: datetime = strawberry.field(
        description="The Date header (when it had none: when it was synced)."
    )
    text_body: str | None = strawberry.field(description="The plain-text part, if any.")
    direction: MessageDirection = strawberry.field(
        description="INBOUND from outside, OUTBOUND from the firm."
    )
    thread_id: strawberry.ID = strawberry.field(
        description="Messages of one conversation share it."
    )
    sender_authentication: SenderAuthentication = strawberry.field(
        description="DMARC as the firm's receiving server reported it. Attachments of mail that "
        "failed (or, in strict mode, did not pass) are never saved into Documents."
    )
    content_skipped: str | None = strawberry.field(
        description="Why the body and attachments were not stored (the message was larger "
        "than the size limit: its headers were kept); null when they were."
    )
    private: bool = strawberry.field(
        description="Its thread is private to the owner of the personal mailbox it came "
        "through (until they share it: shareThread)."
    )
    content_hidden: bool = strawberry.field(
        description="True when you may not read it (a private thread of someone else's): "
        "subject, participants and date stay; textBody, htmlBody and attachments are "
        "null or empty."
    )
    raw_html: strawberry.Private[str | None]

    @classmethod
    def from_model(  # type: ignore[override]
        cls, row: MessageModel | message_pages.MessageRow, reader: Reader
    ) -> Message:
        """The message as `reader` may see it: its content left out where the rule of
        services/mail/threads hides it."""
        hidden = reader.hides(row.private_to_id)
        return cls(
            id=row.pk,
            subject=row.subject,
            from_=row.from_address,
            to=list(row.to_addresses),
            cc=list(row.cc_addresses),
            sent_at=row.sent_at,
            text_body=None if hidden else row.text_body,
            direction=MessageDirection(row.direction),
            thread_id=strawberry.ID(row.thread_key),
            sender_authentication=SenderAuthentication(row.sender_auth or "NONE"),
            content_skipped=row.content_skipped,
            private=row.private_to_id is not None,
            content_hidden=hidden,
            raw_html=None if hidden else row.html_body,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Message | None]:
        staff = info.context.staff
        if staff is None or not staff.uses_inbox:
            return [None for _ in node_ids]
        rows = await info.context.loaders.by_id(MessageModel).load_many([int(i) for i in node_ids])
        reader = info.context.mail_reader
        return [cls.from_model(row, reader) if row is not None else None for row in rows]

    @strawberry.field(description="The HTML part, sanitized (no scripts, no event handlers).")
    def html_body(self) -> str | None:
        return parse.sanitize_html(self.raw_html) if self.raw_html else None

    accounts: list[Account] = loaded_field(
        "accounts_by_message", description="The accounts whose Email tab shows this message."
    )
    attachments: list[Attachment] = batched_field(
        _attachments_of,
        description="The files attached to the message, in the order they came; empty when "
        "its content is hidden from you.",
    )
    delivery: Delivery | None = loaded_field(
        "delivery_by_message",
        description="How the sending went, for a reply written in Inbox+ (queued, sent, or "
        "failed with the mail server's reason); null for mail not sent through Portico.",
        permission_classes=[UsesInbox],  # as the message itself (and Delivery's rule for replies)
    )


# The inbox's filter argument, by its GraphQL name.
DELIVERY = "deliveryStatus"


@strawberry.type(description="What a reply did.")
class MessagePayload:
    errors: list[UserError] = strawberry.field(
        description="Why nothing was done; empty on success."
    )
    message: Message | None = strawberry.field(
        default=None, description="The message concerned; null on failure."
    )


async def inbox(
    info: Info,
    first: int | None,
    after: str | None,
    delivery_status: DeliveryStatus | None = None,
) -> Connection[Message]:
    """Inbox+: the firm's synced mail, newest first, keyset-paged (the field checks the
    inbox right); with `delivery_status`, only replies whose delivery is in that status."""
    size = first if first is not None else 20
    check_page_size(size, info.context.settings.max_page_size)
    if delivery_status == DeliveryStatus.CANCELLED:  # only invitation mail is ever withdrawn
        raise bad_input("A reply is never cancelled: ask for QUEUED, SENT or FAILED.", DELIVERY)
    status = None if delivery_status is None else str(delivery_status.value)
    try:
        total, rows, more = await message_pages.inbox_page(info.context.scope, size, after, status)
    except InputError as exc:  # a malformed cursor: the client's mistake, said plainly
        raise bad_input(str(exc), "after") from None
    return message_connection(rows, total, more, after, info.context.mail_reader)


async def account_messages(
    info: Info, account_id: int, first: int | None, after: str | None
) -> Connection[Message]:
    """The account's Email tab: its synced mail, newest first, keyset-paged like Inbox+ (the
    field checks the inbox right); pages of many accounts load together."""
    size = first if first is not None else 20
    check_page_size(size, info.context.settings.max_page_size)
    try:
        position = message_pages.decode_cursor(after) if after is not None else None
    except InputError as exc:  # a malformed cursor: the client's mistake, said plainly
        raise bad_input(str(exc), "after") from None
    total, rows, more = await info.context.loaders.messages_page.load((account_id, size, position))
    return message_connection(rows, total, more, after, info.context.mail_reader)


def message_connection(
    rows: Sequence[MessageModel | message_pages.MessageRow],
    total: int,
    more: bool,
    after: str | None,
    reader: Reader,
) -> Connection[Message]:
    """One keyset page of messages in the Relay shape, as `reader` may see them."""
    edges = [
        Edge(node=Message.from_model(r, reader), cursor=message_pages.encode_cursor(r))
        for r in rows
    ]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=more,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=total,
    )


@strawberry.type(description="What sharing or unsharing a thread did.")
class ThreadPayload:
    errors: list[UserError] = strawberry.field(
        description="Why nothing was done; empty on success."
    )
    thread_id: strawberry.ID | None = strawberry.field(
        default=None, description="The thread concerned; null on failure."
    )
    private: bool | None = strawberry.field(
        default=None,
        description="Whether its mail from your personal mailboxes is private now; null on "
        "failure.",
    )
