"""EMAIL SYNC mutations: connecting and syncing mailboxes, replying to synced mail (staff
with the inbox right)."""

from __future__ import annotations

from typing import Annotated, TypeVar

import strawberry
from strawberry.types import Info

from models import MailboxVisibility
from resolvers.attempt import attempt
from resolvers.mutations.selection import mutation
from schema import ids
from schema.enums import MailboxVisibility as Visibility
from schema.inputs import UpdateMailboxInput
from schema.mail import ConnectMailboxInput, Mailbox, MailboxPayload
from schema.messages import Message, MessagePayload, ThreadPayload
from schema.permissions import UsesInbox
from services.mail import mailboxes, replies, sync_engine, threads

T = TypeVar("T")

uses_inbox = [UsesInbox]


def _payload(mailbox: object, errors: list) -> MailboxPayload:
    return MailboxPayload(errors=errors, mailbox=Mailbox.from_model(mailbox) if mailbox else None)


def _or(value: T | None, default: T) -> T:
    """A nullable input field's value, its default when the client passed null."""
    return default if value is None else value


@strawberry.type
class MailMutations:
    @mutation(
        description="Connects an IMAP/SMTP mailbox of the firm after checking both logins; "
        "a failure answers IMAP_/SMTP_ AUTH_FAILED, CONNECTION_FAILED or TLS_FAILED and saves "
        "nothing.",
        permission_classes=uses_inbox,
    )
    async def connect_mailbox(
        self,
        info: Info,
        input: Annotated[
            ConnectMailboxInput, strawberry.argument(description="The mailbox and its servers.")
        ],
    ) -> MailboxPayload:
        new = mailboxes.NewMailbox(
            address=input.address,
            imap_host=input.imap_host,
            imap_port=_or(input.imap_port, 993),
            imap_tls=_or(input.imap_tls, True),
            smtp_host=input.smtp_host,
            smtp_port=_or(input.smtp_port, 587),
            smtp_tls=_or(input.smtp_tls, True),
            username=input.username,
            password=input.password,
            visibility=MailboxVisibility(_or(input.visibility, Visibility.SHARED).value),
        )
        return _payload(
            *await attempt(
                info.context,
                mailboxes.connect_mailbox(
                    info.context.scope, new, info.context.settings, staff=info.context.staff
                ),
            )
        )

    @mutation(
        description="Changes how a mailbox logs in (null keeps a value); both logins are "
        "checked as connectMailbox does and a failure answers the same codes and saves "
        "nothing. A FAILED mailbox is IDLE again and its next sync pass starts at once. "
        "visibility switches it between SHARED and PERSONAL, its stored mail with it: only "
        "the staff member who connected it (FORBIDDEN for others); given alone, no login is "
        "checked.",
        permission_classes=uses_inbox,
    )
    async def update_mailbox(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The mailbox's id.")],
        input: Annotated[UpdateMailboxInput, strawberry.argument(description="What to change.")],
    ) -> MailboxPayload:
        changes = mailboxes.MailboxChanges(
            imap_host=input.imap_host,
            imap_port=input.imap_port,
            imap_tls=input.imap_tls,
            smtp_host=input.smtp_host,
            smtp_port=input.smtp_port,
            smtp_tls=input.smtp_tls,
            username=input.username,
            password=input.password,
        )
        return _payload(
            *await attempt(
                info.context,
                mailboxes.update_mailbox(
                    info.context.scope,
                    ids.decode(id, "Mailbox"),
                    changes,
                    info.context.settings,
                    staff=info.context.staff,
                    visibility=None
                    if input.visibility is None
                    else MailboxVisibility(input.visibility.value),
                ),
            )
        )

    @mutation(
        description="Disconnects a mailbox: its sync stops at once. Its synced mail stays "
        "readable (no longer updated), or with deleteMessages the mail that came only through "
        "it (stored through it, and no other mailbox of the firm among its sender and "
        "recipients) is deleted with its attachments. Answers the mailbox as it was.",
        permission_classes=uses_inbox,
    )
    async def disconnect_mailbox(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The mailbox's id.")],
        delete_messages: Annotated[
            bool | None,
            strawberry.argument(
                description="Also delete the mail that came only through this mailbox "
                "(default false)."
            ),
        ] = False,
    ) -> MailboxPayload:
        return _payload(
            *await attempt(
                info.context,
                mailboxes.disconnect_mailbox(
                    info.context.scope,
                    ids.decode(id, "Mailbox"),
                    info.context.settings,
                    staff=info.context.staff,
                    delete_messages=bool(delete_messages),
                ),
            )
        )

    @mutation(
        description="Syncs one mailbox now and returns it as the sync left it.",
        permission_classes=uses_inbox,
    )
    async def sync_mailbox(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The mailbox's id.")],
    ) -> MailboxPayload:
        return _payload(
            *await attempt(
                info.context,
                sync_engine.sync_now(
                    info.context.scope,
                    ids.decode(id, "Mailbox"),
                    info.context.settings,
                    info.context.bus,
                ),
            )
        )

    @mutation(
        description="Replies to a message of Inbox+: stored in its thread as OUTBOUND, sent "
        "through the mailbox it came through (with In-Reply-To and References) and filed in "
        "that mailbox's Sent folder. Errors: INVALID_TEXT, NOT_FOUND, NO_MAILBOX, NO_RECIPIENT.",
        permission_classes=uses_inbox,
    )
    async def reply_to_message(
        self,
        info: Info,
        message_id: Annotated[
            strawberry.ID, strawberry.argument(description="The id of the message to answer.")
        ],
        body: Annotated[str, strawberry.argument(description="The reply, as plain text.")],
    ) -> MessagePayload:
        reply, errors = await attempt(
            info.context,
            replies.reply_to_message(
                info.context.scope,
                ids.decode(message_id, "Message"),
                body,
                info.context.settings,
                info.context.bus,
                reader=info.context.mail_reader,
            ),
        )
        message = Message.from_model(reply, info.context.mail_reader) if reply else None
        return MessagePayload(errors=errors, message=message)

    @mutation(
        description="Shares a thread of your personal mailbox with the firm: its mail (also "
        "mail arriving later) becomes readable by all staff with the inbox right, and its "
        "attachments are auto-saved into the Documents of accounts that auto-save. The "
        "mailbox's owner only, or an owner or admin for a deactivated member's (FORBIDDEN "
        "for others); NOT_FOUND for a thread the firm does not have.",
        permission_classes=uses_inbox,
    )
    async def share_thread(
        self,
        info: Info,
        thread_id: Annotated[
            strawberry.ID, strawberry.argument(description="A message's threadId.")
        ],
    ) -> ThreadPayload:
        return await _thread_change(info, thread_id, share=True)

    @mutation(
        description="Makes a thread you shared private to you again (its mail from your "
        "personal mailboxes; documents saved from it meanwhile stay). The mailbox's owner "
        "only, or an owner or admin for a deactivated member's (FORBIDDEN for others); "
        "NOT_FOUND for a thread the firm does not have; MAILBOX_DISCONNECTED when its mail "
        "is in none of the personal mailboxes any more (it stays shared).",
        permission_classes=uses_inbox,
    )
    async def unshare_thread(
        self,
        info: Info,
        thread_id: Annotated[
            strawberry.ID, strawberry.argument(description="A message's threadId.")
        ],
    ) -> ThreadPayload:
        return await _thread_change(info, thread_id, share=False)


async def _thread_change(info: Info, thread_id: str, *, share: bool) -> ThreadPayload:
    context = info.context
    staff = context.require_staff()
    change = (
        threads.share_thread(context.scope, staff, thread_id, context.settings)
        if share
        else threads.unshare_thread(context.scope, staff, thread_id)
    )
    _, errors = await attempt(context, change)
    if errors:
        return ThreadPayload(errors=errors)
    return ThreadPayload(errors=[], thread_id=strawberry.ID(thread_id), private=not share)
