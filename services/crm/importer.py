"""The CSV contact import: the rules of importContacts and `portico import-contacts`.

A file is read whole first. File-level failures (not CSV, missing columns, too many rows)
raise ImportFileError and write nothing. Then every row is checked and written in its own
transaction: a valid row commits, a rejected row leaves nothing behind and is reported with
the physical line where its record starts (header = line 1).

A row whose `email` already belongs to a contact of the firm updates that contact; any other
row creates one. Rows are applied in file order, so a later duplicate row matches the contact
an earlier row created.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models import Account, AccountContact, AccountType, Contact, EmailAddress
from services.crm import records
from services.shared.emails import clean_label, validate_address
from services.shared.errors import ErrorCode, InputError, UserError
from services.shared.scope import FirmScope

REQUIRED_COLUMNS = ("first_name", "last_name", "email")
KNOWN_COLUMNS = (*REQUIRED_COLUMNS, "account")
PRIMARY_LABEL = "Email"
# Comma first; semicolon and tab are what spreadsheet exports use in many locales.
DELIMITERS = (",", ";", "\t")
# Keeps IN (...) lists below SQLite's and PostgreSQL's parameter limits.
CHUNK = 500

ProgressCallback = Callable[[int, int], None]
"""Called as (rows done, rows in the file): once with 0 before the first row, then per row."""

T = TypeVar("T")


class ImportFileError(InputError):
    """The file as a whole is unusable: nothing was written, every row counts as rejected."""

    def __init__(self, errors: Sequence[UserError], rejected_rows: Sequence[int] = ()) -> None:
        super().__init__(*errors)
        self.rejected_rows = list(rejected_rows)


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    rejected_rows: list[int] = field(default_factory=list)
    errors: list[UserError] = field(default_factory=list)


@dataclass(frozen=True)
class _Column:
    index: int
    header: str  # as written in the file, trimmed: the error path and a further address's label


@dataclass(frozen=True)
class _Layout:
    first_name: _Column
    last_name: _Column
    email: _Column
    account: _Column | None
    further: tuple[_Column, ...]


@dataclass(frozen=True)
class _Record:
    line: int  # physical line where the record starts
    cells: list[str]


@dataclass(frozen=True)
class _Address:
    typed: str
    normalized: str
    label: str
    header: str  # the column it came from, for error paths


@dataclass(frozen=True)
class _Row:
    line: int
    first_name: str
    last_name: str
    addresses: tuple[_Address, ...]  # the `email` column's address first
    account: str  # "" when the row names no account


class _RowRejected(Exception):
    def __init__(self, line: int, *errors: UserError) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.line = line
        self.errors = list(errors)


async def import_contacts(
    scope: FirmScope,
    data: str | bytes,
    max_rows: int,
    progress: ProgressCallback | None = None,
) -> ImportResult:
    """Import `data` (CSV text, or UTF-8 bytes) into the scope's firm.

    Raises ImportFileError for a file-level failure; row failures are in the result.
    """
    text = _decode(data)
    layout, records = _read(text)
    if len(records) > max_rows:
        raise ImportFileError(
            [
                UserError(
                    ErrorCode.TOO_MANY_ROWS,
                    f"The file has {len(records)} rows; at most {max_rows} are imported at once.",
                    ("csv",),
                )
            ],
            [r.line for r in records],
        )

    parsed = [_parse_row(layout, record) for record in records]
    valid = [row for row in parsed if isinstance(row, _Row)]
    state = await _State.load(scope, valid)
    result = ImportResult()
    if progress:
        progress(0, len(parsed))
    for done, row in enumerate(parsed, start=1):
        rejected = row if isinstance(row, _RowRejected) else None
        if isinstance(row, _Row):
            try:
                created = await state.apply(row)
            except _RowRejected as exc:
                rejected = exc
            else:
                if created:
                    result.created += 1
                else:
                    result.updated += 1
        if rejected is not None:
            result.rejected_rows.append(rejected.line)
            result.errors.extend(rejected.errors)
        if progress:
            progress(done, len(parsed))
    return result


# Reading the file


def _file_error(code: ErrorCode, message: str, *path: str) -> ImportFileError:
    return ImportFileError([UserError(code, message, ("csv", *path))])


def _decode(data: str | bytes) -> str:
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")  # utf-8-sig drops a leading BOM
        except UnicodeDecodeError as exc:
            raise _file_error(
                ErrorCode.INVALID_CSV,
                f"The file is not UTF-8 text (bad byte at offset {exc.start}).",
            ) from None
    else:
        text = data.removeprefix("\ufeff")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from a broken client encoding
            raise _file_error(
                ErrorCode.INVALID_CSV, "The file is not valid Unicode text."
            ) from None
    if "\x00" in text:
        # NUL means a binary file (a spreadsheet, UTF-16); the databases reject it anyway.
        raise _file_error(ErrorCode.INVALID_CSV, "The file holds binary data, not CSV text.")
    if not text.strip():
        raise _file_error(ErrorCode.INVALID_CSV, "The file is empty.")
    return text


def _records(text: str, delimiter: str) -> Iterator[_Record]:
    """Non-blank records with the physical line each starts on; INVALID_CSV on bad quoting."""
    # newline="" lets the csv module keep newlines inside quoted fields (and count them).
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _file_error(
                ErrorCode.INVALID_CSV,
                f"Line {start}: the file is not valid CSV ({exc}).",
                str(start),
            ) from None
        # Blank lines and rows of empty cells (spreadsheet leftovers) are no rows at all.
        if any(cell.strip() for cell in cells):
            yield _Record(start, cells)
        start = reader.line_num + 1


def _read(text: str) -> tuple[_Layout, list[_Record]]:
    """The header's layout and the data records, trying the delimiters in turn."""
    fallback: ImportFileError | None = None
    for delimiter in DELIMITERS:
        records = _records(text, delimiter)
        try:
            header = next(records, None)
        except ImportFileError as exc:
            fallback = fallback or exc
            continue
        if header is None:
            raise _file_error(ErrorCode.INVALID_CSV, "The file has no header row.")
        layout = _layout(header)
        if isinstance(layout, _Layout):
            return layout, list(records)
        failure = ImportFileError(layout, _lines(records))
        # Another delimiter only helps when required columns were not found with this one.
        if not any(e.code == ErrorCode.MISSING_COLUMN for e in layout):
            raise failure
        fallback = fallback or failure
    assert fallback is not None
    raise fallback


def _lines(records: Iterator[_Record]) -> list[int]:
    try:
        return [r.line for r in records]
    except ImportFileError:
        return []


def _column_key(header: str) -> str:
    """Headers compare case-insensitively, spaces and underscores alike."""
    return re.sub(r"[\s_]+", "_", header.strip().lower())


def _layout(header: _Record) -> _Layout | list[UserError]:
    line = str(header.line)
    known: dict[str, _Column] = {}
    further: list[_Column] = []
    errors: list[UserError] = []
    for index, raw in enumerate(header.cells):
        column = _Column(index, raw.strip())
        key = _column_key(raw)
        if key in KNOWN_COLUMNS:
            if key in known:
                errors.append(
                    UserError(
                        ErrorCode.DUPLICATE_COLUMN,
                        f"Line {line}: the header has the {key} column twice.",
                        ("csv", line, column.header),
                    )
                )
            known.setdefault(key, column)
        elif "email" in key:
            try:
                clean_label(column.header)
            except InputError as exc:
                errors.extend(
                    UserError(e.code, f"Line {line}: {e.message}", ("csv", line, column.header))
                    for e in exc.errors
                )
            further.append(column)
    for key in REQUIRED_COLUMNS:
        if key not in known:
            errors.append(
                UserError(
                    ErrorCode.MISSING_COLUMN,
                    f"Line {line}: the header has no {key} column.",
                    ("csv", line, key),
                )
            )
    if errors:
        return errors
    return _Layout(
        first_name=known["first_name"],
        last_name=known["last_name"],
        email=known["email"],
        account=known.get("account"),
        further=tuple(further),
    )


def _parse_row(layout: _Layout, record: _Record) -> _Row | _RowRejected:
    """The row's cleaned values, or every reason (syntax only) to reject it."""
    line = str(record.line)
    errors: list[UserError] = []

    def cell(column: _Column | None) -> str:
        if column is None or column.index >= len(record.cells):
            return ""  # a short row: the missing cells are empty
        return record.cells[column.index].strip()

    def fail(code: str, message: str, column: _Column) -> None:
        errors.append(UserError(code, f"Line {line}: {message}", ("csv", line, column.header)))

    def failed(exc: InputError, column: _Column, last_name: _Column | None = None) -> None:
        for e in exc.errors:
            fail(e.code, e.message, last_name if last_name and e.field == ("lastName",) else column)

    # The CRM's own rules, each error reported at its column.
    first, last = cell(layout.first_name), cell(layout.last_name)
    try:
        records.clean_person_names(first, last)
    except InputError as exc:
        failed(exc, layout.first_name, layout.last_name)

    account = cell(layout.account)
    if layout.account and account:
        try:
            records.clean_account_name(account)
        except InputError as exc:
            failed(exc, layout.account)

    addresses: dict[str, _Address] = {}
    columns = [(layout.email, PRIMARY_LABEL), *((c, c.header) for c in layout.further)]
    for column, label in columns:
        raw = cell(column)
        if not raw:
            if column is layout.email:
                fail(ErrorCode.MISSING_EMAIL, f"the {column.header} cell is empty.", column)
            continue
        try:
            typed, normalized = validate_address(raw)
        except InputError as exc:
            failed(exc, column)
            continue
        # The same address twice in a row is one address, with its first column's label.
        addresses.setdefault(normalized, _Address(typed, normalized, label, column.header))

    if errors:
        return _RowRejected(record.line, *errors)
    return _Row(record.line, first, last, tuple(addresses.values()), account)


# Writing the rows


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _account_key(name: str) -> str:
    return name.strip().casefold()


@dataclass
class _State:
    """What the import knows of the firm, loaded once up front and kept current per row."""

    scope: FirmScope
    owners: dict[str, int]  # normalized address -> contact id
    contacts: dict[int, Contact]
    accounts: dict[str, int]  # account key -> account id
    links: defaultdict[int, set[int]]  # contact id -> ids of the accounts it is linked to

    @classmethod
    async def load(cls, scope: FirmScope, rows: Iterable[_Row]) -> _State:
        rows = list(rows)
        addresses = sorted({a.normalized for row in rows for a in row.addresses})
        owners: dict[str, int] = {}
        for chunk in _chunks(addresses):
            owners.update(
                await scope.query(EmailAddress)
                .filter(address_normalized__in=list(chunk))
                .values_list("address_normalized", "contact_id")
            )
        contact_ids = sorted(set(owners.values()))
        contacts: dict[int, Contact] = {}
        links: defaultdict[int, set[int]] = defaultdict(set)
        for chunk in _chunks(contact_ids):
            contacts.update(await scope.by_ids(Contact, chunk))
            for account_id, contact_id in (
                await scope.query(AccountContact)
                .filter(contact_id__in=list(chunk))
                .values_list("account_id", "contact_id")
            ):
                links[contact_id].add(account_id)
        accounts: dict[str, int] = {}
        if any(row.account for row in rows):
            # Names match case-insensitively by Unicode rules, which SQLite's lower() lacks,
            # so the comparison runs here; on equal names the oldest account wins.
            for pk, name in await scope.query(Account).order_by("id").values_list("id", "name"):
                accounts.setdefault(_account_key(name), pk)
        return cls(scope, owners, contacts, accounts, links)

    async def apply(self, row: _Row) -> bool:
        """Write one row in its own transaction; True when it created a contact."""
        primary = row.addresses[0]  # the email column's: never missing in a valid row
        contact_id = self.owners.get(primary.normalized)
        contact = self.contacts.get(contact_id) if contact_id is not None else None
        taken = [
            a for a in row.addresses if self.owners.get(a.normalized) not in (None, contact_id)
        ]
        if taken:
            raise _RowRejected(row.line, *(self._taken(row, a) for a in taken))
        new_addresses = [a for a in row.addresses if a.normalized not in self.owners]
        # An empty name cell keeps the stored name: a file without first names erases none.
        changes = {
            name: value
            for name, value in (("first_name", row.first_name), ("last_name", row.last_name))
            if value and (contact is None or getattr(contact, name) != value)
        }
        account_key = _account_key(row.account)
        account_id = self.accounts.get(account_key) if row.account else None
        created_account: Account | None = None
        added = [(a.typed, a.normalized, a.label) for a in new_addresses]
        try:
            async with in_transaction():
                if row.account and account_id is None:
                    created_account = await records.create_account(
                        self.scope, row.account, AccountType.INDIVIDUAL
                    )
                    account_id = created_account.pk
                if contact is None:
                    accounts = [] if account_id is None else [account_id]
                    contact = await records.insert_contact(
                        self.scope, row.first_name, row.last_name, added, accounts
                    )
                else:
                    if changes:
                        await self.scope.query(Contact).filter(pk=contact.pk).update(**changes)
                    await records.add_addresses(self.scope, contact, added)
                    if account_id is not None and account_id not in self.links[contact.pk]:
                        await records.link(self.scope, [account_id], contact.pk)
                    elif added and self.links[contact.pk]:
                        # New addresses owe AccountEmail rows to the accounts already linked.
                        await records.sync_account_emails(self.scope, contact_ids=[contact.pk])
        except (IntegrityError, InputError) as exc:
            if isinstance(exc, InputError) and any(
                e.code != ErrorCode.EMAIL_TAKEN for e in exc.errors
            ):
                raise  # a rule the row's checks missed: a bug, not a race
            # Another request took one of the addresses between the load and this row.
            raise _RowRejected(
                row.line,
                UserError(
                    ErrorCode.EMAIL_TAKEN,
                    f"Line {row.line}: an address of this row was just taken by another change.",
                    ("csv", str(row.line)),
                ),
            ) from None

        # Committed: later rows of the file see this one.
        is_new = contact_id is None
        if not is_new:
            for name, value in changes.items():
                setattr(contact, name, value)
        self.contacts[contact.pk] = contact
        self.owners.update((a.normalized, contact.pk) for a in new_addresses)
        if created_account is not None:
            self.accounts[account_key] = created_account.pk
        if account_id is not None:
            self.links[contact.pk].add(account_id)
        return is_new

    @staticmethod
    def _taken(row: _Row, address: _Address) -> UserError:
        return UserError(
            ErrorCode.EMAIL_TAKEN,
            f"Line {row.line}: {address.typed} already belongs to another contact.",
            ("csv", str(row.line), address.header),
        )
