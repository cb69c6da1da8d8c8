"""importContacts: the CSV import (staff with the manage-accounts right)."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from resolvers.mutations.selection import mutation
from schema.errors import UserError
from schema.payloads import ImportContactsPayload
from schema.permissions import ManagesAccounts
from services.crm import importer


@strawberry.type
class ImportMutations:
    @mutation(
        description=(
            "CSV with a header row. Headers match case-insensitively, spaces and underscores "
            "alike: first_name, last_name, email, account (optional: an account name to link, "
            "created if missing); every other column whose header contains 'email' is a "
            "further address labelled with that header. rejectedRows holds the 1-based line "
            "numbers (header = line 1) of rows not imported."
        ),
        permission_classes=[ManagesAccounts],
    )
    async def import_contacts(
        self,
        info: Info,
        csv: Annotated[
            str,
            strawberry.argument(
                description="The file's text (UTF-8), header row first; the columns as "
                "described above."
            ),
        ],
    ) -> ImportContactsPayload:
        try:
            result = await importer.import_contacts(
                info.context.scope, csv, max_rows=info.context.settings.max_import_rows
            )
        except importer.ImportFileError as exc:
            # Nothing was written: every row of the file counts as rejected.
            return ImportContactsPayload(
                errors=UserError.from_input_error(exc),
                created=0,
                updated=0,
                rejected_rows=exc.rejected_rows,
            )
        return ImportContactsPayload(
            errors=[UserError.from_service(e) for e in result.errors],
            created=result.created,
            updated=result.updated,
            rejected_rows=result.rejected_rows,
        )
