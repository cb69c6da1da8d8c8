"""The transactional outbox: mail is rendered and queued in the caller's transaction.

`enqueue` writes one OutboundEmail row through the current connection, so inside the caller's
`in_transaction()` the mail commits with the change that caused it, or not at all; nothing is
sent from a request. A worker (services/loops/delivery.py) sends the row later.

Replies from Inbox+ (kind REPLY, sent through a connected mailbox) are synced mail: staff
without the inbox right do not see them among an account's deliveries, nor by id. Staff alerts
and digests of new client mail are a member's own mail: only that member sees them, by id, and
only while holding the inbox right; they are nobody's among an account's deliveries
(`visible_to`).

A mass mailing (`enqueue_bulk`) writes the same rows as `enqueue_many` without building a model
instance per row: each template's text is rendered once per distinct set of values of the
names it loads (`Renderer`), equal bodies are encrypted once, and the rows go in as a few
multi-row INSERTs (one `unnest` statement per batch on PostgreSQL, each distinct body sent
once in it; a batch is capped by rows and by body size, and written as soon as it is full,
so a mailing to 10,000 accounts with a long body is never held in memory whole).
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from itertools import repeat
from pathlib import Path
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    nodes,
    select_autoescape,
)
from tortoise import Tortoise
from tortoise.expressions import Q

from models import DeliveryStatus, NotificationCategory, OutboundEmail, StaffMember
from portico.settings import Settings
from services.shared import crypto, emails, paging
from services.shared.scope import FirmScope
from services.shared.wakeups import OUTBOX

TEMPLATES = Path(__file__).parent / "templates"
CRYPTO_PURPOSE = "outbox-body"
MAX_SUBJECT = 998  # the column's (and RFC 5322's line) limit
MAX_NAME = 200
MAX_MESSAGE_ID = 255  # the column's
BATCH = 500  # rows per INSERT when queuing in bulk
# Body characters per bulk INSERT: PostgreSQL refuses a message over 1 GB, and a 100,000-
# character body of short lines is about 3 MB encrypted (each line a <p> in the HTML).
BATCH_BODY_CHARS = 32_000_000
MAX_KIND = 32
MAX_EXTRA_HEADER = 20_000  # a References header of a long thread, folded when sent
# Headers a row may add to the standard ones (replies: threading in the recipient's client).
EXTRA_HEADERS = frozenset({"In-Reply-To", "References"})
REPLY_KIND = "REPLY"  # a reply from Inbox+, sent through a connected mailbox
# The rows that are not replies, as SQL on the table's own columns. A reply keeps its kind
# when its mailbox is disconnected (mailbox_id is then set to NULL).
_NOT_A_REPLY = f"mailbox_id IS NULL AND kind <> '{REPLY_KIND}'"
# Staff's own mail about client mail (services/mail/alerts and digests queue it, to one
# member and without an account): it names clients, senders and subjects.
STAFF_ALERT_KIND = "STAFF_INBOX_ALERT"
STAFF_DIGEST_KIND = "STAFF_INBOX_DIGEST"
STAFF_KINDS = frozenset({STAFF_ALERT_KIND, STAFF_DIGEST_KIND})
_NOT_STAFF_MAIL = f"kind NOT IN ('{STAFF_ALERT_KIND}', '{STAFF_DIGEST_KIND}')"


@dataclass(frozen=True)
class Bodies:
    text: str
    html: str


def readable_date(value: datetime) -> str:
    """A date people read the same anywhere: '3 March 2026, 14:05 UTC'."""
    value = value.astimezone(UTC)
    return f"{value.day} {value:%B %Y, %H:%M} UTC"


_templates = Environment(
    loader=FileSystemLoader(TEMPLATES),
    # HTML escapes every value (names are user input); subject and text are plain text.
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,  # a missing context key is a bug, never an empty link
    keep_trailing_newline=True,
)
_templates.filters["when"] = readable_date

# CR and LF start a new header line; the other line breaks and controls have no place there.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
# Whitespace (\s is exactly str.isspace) or one of RFC 5322's specials <>,;:"()[]\\
_NOT_IN_ADDRESS = re.compile(r'[\s<>,;:"()\[\]\\]')


def header_text(value: str, limit: int = MAX_SUBJECT) -> str:
    """`value` as one safe header line: line breaks and controls become spaces."""
    return " ".join(_UNSAFE.sub(" ", value).split())[:limit]


def header_safe_address(value: str) -> str:
    """One bare address (local@domain); a second address, a name or a line break is refused.

    Stricter than RFC 5322 on purpose (no quoted local parts, comments or IP literals, as
    the CRM's validation has none): nothing in it can end a header or start another.
    """
    address = value.strip()
    local, _, domain = address.rpartition("@")
    if (
        not local
        or not domain
        or "@" in local
        or _UNSAFE.search(address)
        or _NOT_IN_ADDRESS.search(address)
    ):
        raise ValueError(f"not a single email address: {value!r}")
    return address


def sender_address(settings: Settings) -> str:
    """The address part of PORTICO_MAIL_FROM (its display name gives way to the firm's)."""
    return _sender_address(settings.mail_from)


@functools.lru_cache(maxsize=8)
def _sender_address(mail_from: str) -> str:
    _, address = parseaddr(mail_from)
    return header_safe_address(address)


def render(template: str, context: dict[str, Any]) -> tuple[str, Bodies]:
    """Subject (one safe line), text and HTML of `template` with `context`."""
    subject = _templates.get_template(f"{template}.subject.txt").render(context)
    text = _templates.get_template(f"{template}.txt").render(context)
    html = _templates.get_template(f"{template}.html").render(context)
    return header_text(subject), Bodies(text=text, html=html)


def encrypt_bodies(settings: Settings, bodies: Bodies) -> str:
    payload = json.dumps({"text": bodies.text, "html": bodies.html}).encode()
    return crypto.fernet(settings, CRYPTO_PURPOSE).encrypt(payload).decode()


def decrypt_bodies(settings: Settings, row: OutboundEmail) -> Bodies:
    payload = json.loads(crypto.fernet(settings, CRYPTO_PURPOSE).decrypt(row.body_encrypted))
    return Bodies(text=payload["text"], html=payload["html"])


def new_message_id(settings: Settings, domain: str | None = None) -> str:
    """Unique per row and kept across retries, so a recipient can spot a repeated delivery.

    `domain` is the sender's (a connected mailbox); PORTICO_MAIL_FROM's when not given.
    """
    domain = domain or sender_address(settings).rpartition("@")[2]
    return f"<outbox.{secrets.token_hex(16)}@{domain}>"


@dataclass(frozen=True)
class Mail:
    """One message to queue: `template` rendered with `context` for `to`."""

    to: str
    template: str
    context: dict[str, Any]
    kind: str
    account_id: int | None = None
    category: str | None = None
    invitation_id: int | None = None  # revoking the invitation cancels the unsent mail
    # A subject the caller built (a mass mailing's, naming some accounts): the template's
    # subject part is then not rendered, so the other parts render once for the mailing.
    subject: str | None = None


async def enqueue(
    *,
    firm_id: int,
    firm_name: str,
    to: str,
    template: str,
    context: dict[str, Any],
    kind: str,
    settings: Settings,
    account_id: int | None = None,
    category: str | None = None,
    invitation_id: int | None = None,
) -> OutboundEmail:
    """Render `template` and queue it for `to`, in the caller's transaction if there is one.

    Raises ValueError for a malformed address, kind or category (a bug in the caller: the
    caller's transaction then rolls back with it).
    """
    mail = Mail(to, template, context, kind, account_id, category, invitation_id)
    [row] = await enqueue_many(firm_id, firm_name, [mail], settings)
    return row


async def enqueue_many(
    firm_id: int, firm_name: str, mails: Sequence[Mail], settings: Settings
) -> list[OutboundEmail]:
    """Queues many messages with few INSERTs (a mass mailing to thousands of clients)."""
    from_name = header_text(firm_name, MAX_NAME)
    rows = [_row(firm_id, from_name, mail, settings) for mail in mails]
    if len(rows) == 1:
        await rows[0].save()  # keeps the id on the row
    elif rows:
        await OutboundEmail.bulk_create(rows, batch_size=BATCH)
    # The rows may not be committed yet; a woken worker that finds nothing looks again soon.
    OUTBOX.notify()
    return rows


# Mail a person is waiting for, at a screen: claimed before everything else due, so a firm's
# mass mailing of thousands does not hold up a sign-in code. Other kinds (mass mail too,
# written by enqueue_bulk with the column's default) are NORMAL.
URGENT, NORMAL = 0, 1
URGENT_KINDS = frozenset(
    {"SIGN_IN_CODE", "NEW_DEVICE", "AUTHENTICATOR_CHANGED", "STAFF_ONBOARDING"}
)


def priority_of(kind: str) -> int:
    return URGENT if kind in URGENT_KINDS else NORMAL


def _row(firm_id: int, from_name: str, mail: Mail, settings: Settings) -> OutboundEmail:
    _check_kind(mail.kind)
    category = NotificationCategory(mail.category).value if mail.category else None
    subject, bodies = render(mail.template, mail.context)
    if mail.subject is not None:
        subject = header_text(mail.subject)
    return OutboundEmail(
        firm_id=firm_id,
        account_id=mail.account_id,
        invitation_id=mail.invitation_id,
        kind=mail.kind,
        category=category,
        to_address=header_safe_address(mail.to),
        from_name=from_name,
        subject=subject,
        body_encrypted=encrypt_bodies(settings, bodies),
        message_id=new_message_id(settings),
        next_attempt_at=datetime.now(UTC),
        priority=priority_of(mail.kind),
    )


class Renderer:
    """`render` that renders each distinct text once (for one batch of mail).

    A template without include/extends/import reads nothing but the names it loads: the
    context's values, or the environment's globals (range, joiner, ...) when the context has
    no such key. So its output is keyed by the name and value of every name it loads (every
    `Name` node with ctx "load" in its syntax tree, whether or not that part runs), and mails
    that agree on all of them share the text: a mailing to thousands renders its body once.
    Only plain values (str, int, bool, None) are compared, with their type; a composed
    template, one with a filter, test or function of ours that is handed the whole context
    (@pass_context), or a context with another value for a loaded name, renders every time.

    Each template is fetched once per Renderer (its analysis cached on that Template object,
    so a template file the environment reloads is analysed again).
    """

    def __init__(self) -> None:
        self._templates: dict[str, tuple[Template, tuple[str, ...] | None]] = {}
        self._texts: dict[tuple[Any, ...], str] = {}

    def render(
        self, template: str, context: dict[str, Any], subject: str | None = None
    ) -> tuple[str, Bodies]:
        """As `render`; with `subject` (built by the caller) the subject part is not rendered."""
        if subject is None:
            subject = self._text(f"{template}.subject.txt", context)
        text = self._text(f"{template}.txt", context)
        html = self._text(f"{template}.html", context)
        return header_text(subject), Bodies(text=text, html=html)

    def _text(self, name: str, context: dict[str, Any]) -> str:
        found = self._templates.get(name)
        if found is None:
            template = _templates.get_template(name)
            found = self._templates[name] = (template, loaded_names(template))
        template, names = found
        if names is None:
            return template.render(context)
        values = tuple(map(context.get, names, repeat(_MISSING)))
        types = tuple(map(type, values))
        if not _PLAIN.issuperset(types):
            return template.render(context)
        key = (name, names, types, values)  # names: the template's own, in its order
        text = self._texts.get(key)
        if text is None:  # a missing value fails here, as in render()
            text = self._texts[key] = template.render(context)
        return text


_MISSING = object()
_PLAIN = frozenset({str, int, bool, type(None), object})  # object: _MISSING (a global, or fails)
# Nodes through which a template reads more than the names it loads.
_COMPOSED = (
    nodes.Include,
    nodes.Extends,
    nodes.Import,
    nodes.FromImport,
    nodes.ContextReference,
    nodes.DerivedContextReference,
    nodes.ImportedName,
)
# The analysis of each Template object: dropped with it when the environment reloads the file.
_loaded: weakref.WeakKeyDictionary[Template, tuple[str, ...] | None] = weakref.WeakKeyDictionary()


def loaded_names(template: Template) -> tuple[str, ...] | None:
    """Every name `template` loads (globals included), sorted; None if it is composed of
    other templates, uses a filter, test or function that reads the whole context, or its
    file changed after it was loaded (its source is not the one compiled)."""
    if template in _loaded:
        return _loaded[template]
    env = template.environment
    source, _, _ = env.loader.get_source(env, template.name)  # type: ignore[union-attr,arg-type]
    if not template.is_up_to_date:  # read a newer file than the one compiled: do not share
        return None
    tree = env.parse(source)
    names: tuple[str, ...] | None = None
    loads = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}
    if not any(True for _ in tree.find_all(_COMPOSED)) and not _reads_context(env, tree, loads):
        names = tuple(sorted(loads))
    _loaded[template] = names
    return names


def _reads_context(env: Environment, tree: nodes.Template, loads: set[str]) -> bool:
    """Whether a filter, test or global function the template uses is handed the whole
    context (@pass_context) and is not Jinja's own (map, select, ...: they read no value
    from it): it may read any name, so the names loaded say nothing."""
    used = [env.filters.get(n.name) for n in tree.find_all(nodes.Filter)]
    used += [env.tests.get(n.name) for n in tree.find_all(nodes.Test)]
    used += [env.globals.get(name) for name in loads]
    return any(
        getattr(getattr(f, "jinja_pass_arg", None), "name", None) == "context"
        and not getattr(f, "__module__", "").startswith("jinja2.")
        for f in used
    )


# The columns enqueue_bulk writes; the others are NULL (or their default) on a new row.
_BULK_COLUMNS = (
    "firm_id",
    "account_id",
    "invitation_id",
    "mailing_id",
    "kind",
    "category",
    "to_address",
    "from_name",
    "subject",
    "body_encrypted",
    "message_id",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
)
# PostgreSQL array types of those columns, for INSERT ... SELECT FROM unnest(...).
_PG_TYPES = (
    "int",
    "int",
    "int",
    "int",
    *["text"] * 5,
    "int",  # body_encrypted: the row's index into the batch's distinct bodies (a parameter)
    "text",
    "text",
    "int",
    "timestamptz",
    "timestamptz",
)
# Columns whose length the model limits (bulk_create checks them through the fields).
_LIMITED = ("kind", "category", "to_address", "from_name", "subject", "message_id")


async def enqueue_bulk(
    firm_id: int,
    firm_name: str,
    mails: Sequence[Mail],
    settings: Settings,
    *,
    mailing_id: int | None = None,
) -> int:
    """`enqueue_many` for a mass mailing: the same rows (tests/test_mass_mail.py compares
    them), written as plain values with few statements, in the caller's transaction; how many.

    Raises ValueError for a malformed address, kind or category, as `enqueue_many` does.
    """
    from_name = header_text(firm_name, MAX_NAME)
    now = datetime.now(UTC)
    renderer = Renderer()
    sealed: dict[Bodies, str] = {}  # equal bodies encrypted once (one Fernet key, cached)
    domain = sender_address(settings).rpartition("@")[2]
    postgres = Tortoise.get_connection("default").capabilities.dialect == "postgres"
    batches = _Batches(distinct=postgres)
    written = 0
    for mail in mails:
        _check_kind(mail.kind)
        category = NotificationCategory(mail.category).value if mail.category else None
        subject, bodies = renderer.render(mail.template, mail.context, mail.subject)
        body = sealed.get(bodies)
        if body is None:
            body = sealed[bodies] = encrypt_bodies(settings, bodies)
        full = batches.add(
            (
                firm_id,
                mail.account_id,
                mail.invitation_id,
                mailing_id,
                mail.kind,
                category,
                header_safe_address(mail.to),
                from_name,
                subject,
                body,
                new_message_id(settings, domain),
                DeliveryStatus.QUEUED.value,
                0,
                now,
                now,
            )
        )
        if full:  # written as soon as a batch is full: a mailing is never held whole
            written += await _write(full, postgres)
            sealed.clear()
    written += await _write(batches.rest(), postgres)
    if written:
        OUTBOX.notify()  # as in enqueue_many: a worker that finds nothing yet looks again soon
    return written


async def _write(rows: list[tuple[Any, ...]], postgres: bool) -> int:
    if rows:
        _check_lengths(rows)
        await _insert(rows, postgres)
    return len(rows)


def _check_lengths(rows: list[tuple[Any, ...]]) -> None:
    """The model's length limits, as bulk_create would check them (SQLite does not)."""
    fields = OutboundEmail._meta.fields_map
    for column in _LIMITED:
        index = _BULK_COLUMNS.index(column)
        limit = fields[column].max_length  # type: ignore[attr-defined]
        for row in rows:
            if row[index] is not None and len(row[index]) > limit:
                raise ValueError(f"{column} longer than {limit} characters: {row[index]!r}")


_BODY = _BULK_COLUMNS.index("body_encrypted")


class _Batches:
    """Rows gathered into runs of at most BATCH rows whose bodies hold at most
    BATCH_BODY_CHARS characters (a run's first row always fits); with `distinct`, an equal
    body counts once per run (the PostgreSQL statement sends each body once)."""

    def __init__(self, *, distinct: bool) -> None:
        self.distinct = distinct
        self.batch: list[tuple[Any, ...]] = []
        self.bodies: set[str] = set()
        self.size = 0

    def add(self, row: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Adds `row`; the full run to write first when `row` did not fit in it, else []."""
        body = row[_BODY]
        grows = 0 if self.distinct and body in self.bodies else len(body)
        full: list[tuple[Any, ...]] = []
        if self.batch and (len(self.batch) == BATCH or self.size + grows > BATCH_BODY_CHARS):
            full = self.rest()
            grows = len(body)
        self.batch.append(row)
        self.bodies.add(body)
        self.size += grows
        return full

    def rest(self) -> list[tuple[Any, ...]]:
        """The run gathered so far, and a fresh start."""
        batch, self.batch, self.bodies, self.size = self.batch, [], set(), 0
        return batch


async def _insert(rows: list[tuple[Any, ...]], postgres: bool) -> None:
    conn = Tortoise.get_connection("default")
    table = OutboundEmail._meta.db_table
    columns = ", ".join(_BULK_COLUMNS)
    if postgres:
        # One statement whatever the batch: each column travels as one array parameter, and
        # each distinct body once (a mailing's rows share it), picked by a per-row index.
        index: dict[str, int] = {}
        keyed = [
            (*row[:_BODY], index.setdefault(row[_BODY], len(index) + 1), *row[_BODY + 1 :])
            for row in rows
        ]
        arrays = ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(_PG_TYPES, start=1))
        bodies = f"${len(_PG_TYPES) + 1}::text[]"
        picked = ", ".join(
            f"({bodies})[r.{name}]" if name == "body_encrypted" else f"r.{name}"
            for name in _BULK_COLUMNS
        )
        values = [list(column) for column in zip(*keyed, strict=True)]
        await conn.execute_query(
            f"INSERT INTO {table} ({columns}) SELECT {picked}"
            f" FROM unnest({arrays}) AS r({columns})",
            [*values, list(index)],
        )
        return
    marks = "(" + ", ".join("?" * len(_BULK_COLUMNS)) + ")"
    await conn.execute_query(
        f"INSERT INTO {table} ({columns}) VALUES {', '.join([marks] * len(rows))}",
        [value for row in rows for value in row],
    )


def _check_kind(kind: str) -> None:
    if not 0 < len(kind) <= MAX_KIND:
        raise ValueError(f"kind must have 1 to {MAX_KIND} characters: {kind!r}")


async def enqueue_written(
    *,
    firm_id: int,
    from_name: str,
    to: str,
    subject: str,
    text: str,
    kind: str,
    message_id: str,
    settings: Settings,
    account_id: int | None = None,
    mailbox_id: int | None = None,
    thread_message_id: int | None = None,
    headers: dict[str, str] | None = None,
) -> OutboundEmail:
    """Queue a plain-text message a person wrote (a reply), in the caller's transaction.

    No template: the text goes out as written, without an HTML part. With `mailbox_id` the
    worker sends it through that mailbox's SMTP server and files a copy in its Sent folder.
    The caller notifies wakeups.OUTBOX once its transaction has committed (a worker woken before
    would not see the row yet, and sleep a whole poll).
    Raises ValueError for a malformed address, kind, header or Message-ID (a bug in the
    caller, whose transaction then rolls back).
    """
    _check_kind(kind)
    extra = dict(headers or {})
    if unknown := sorted(set(extra) - EXTRA_HEADERS):
        raise ValueError(f"headers a row may not set: {unknown}")
    if len(message_id) > MAX_MESSAGE_ID or _UNSAFE.search(message_id):
        raise ValueError(f"not a usable Message-ID: {message_id!r}")
    row = OutboundEmail(
        firm_id=firm_id,
        account_id=account_id,
        kind=kind,
        to_address=header_safe_address(to),
        from_name=header_text(from_name, MAX_NAME),
        subject=header_text(subject),
        body_encrypted=encrypt_bodies(settings, Bodies(text=text, html="")),
        message_id=message_id,
        next_attempt_at=datetime.now(UTC),
        mailbox_id=mailbox_id,
        thread_message_id=thread_message_id,
        headers={name: header_text(value, MAX_EXTRA_HEADER) for name, value in extra.items()}
        or None,
    )
    await row.save()
    return row


def shows_replies(staff: StaffMember) -> bool:
    """Whether `staff` sees replies among the deliveries: their subject, recipient and errors
    are synced mail, for owners, admins and the inbox right (permissions.require_inbox)."""
    return staff.uses_inbox


def is_reply(row: OutboundEmail) -> bool:
    return row.mailbox_id is not None or row.kind == REPLY_KIND


def visible_to(staff: StaffMember, row: OutboundEmail) -> bool:
    """Whether `staff` may read `row` by id: a staff alert or digest only its recipient, while
    holding the inbox right; a reply staff with the inbox right; the rest all staff."""
    if row.kind in STAFF_KINDS:
        return staff.uses_inbox and emails.normalize(row.to_address) == staff.email_normalized
    return shows_replies(staff) or not is_reply(row)


# account id, the keyset position after which the page starts (None: from the newest), size
DeliveryPageKey = tuple[int, paging.Position | None, int]


def delivery_listing(*, with_replies: bool) -> paging.Listing:
    """Account.deliveries' list, newest first, for paging.keyset_pages (one statement per
    distinct window, however many accounts ask).

    Staff alerts and digests are never an account's (a forged or future row with an account
    stays out); without `with_replies` the replies are left out too, of the totals as well.
    """
    where = _NOT_STAFF_MAIL if with_replies else f"{_NOT_STAFF_MAIL} AND {_NOT_A_REPLY}"
    return paging.newest_first(OutboundEmail._meta.db_table, where=where)


def _unclaimed() -> Q:
    """Queued rows no worker holds: a held row is being sent and cannot be called back."""
    return Q(status=DeliveryStatus.QUEUED) & (
        Q(lease_until=None) | Q(lease_until__lt=datetime.now(UTC))
    )


async def cancel_invitation_mail(invitation_ids: list[int]) -> int:
    """Withdraws queued (not yet claimed) mail of revoked invitations; how many."""
    if not invitation_ids:
        return 0
    return await OutboundEmail.filter(_unclaimed(), invitation_id__in=invitation_ids).update(
        status=DeliveryStatus.CANCELLED
    )


# Staff's own replies are correspondence, not the portal's mail: they still go out.
PORTAL_MAIL_KINDS = ("INVITATION", "NOTIFICATION", "DIRECT", "MASS", "AUTOMATION")


async def cancel_account_mail(scope: FirmScope, account_id: int) -> int:
    """Withdraws the account's portal mail that no worker has taken yet; how many."""
    return await (
        scope.query(OutboundEmail)
        .filter(_unclaimed(), account_id=account_id, kind__in=PORTAL_MAIL_KINDS)
        .update(status=DeliveryStatus.CANCELLED)
    )
