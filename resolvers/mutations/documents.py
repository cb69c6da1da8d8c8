"""uploadDocument (GraphQL multipart request; staff) and deleteDocument (manage-accounts)."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.file_uploads import Upload
from strawberry.types import Info

from resolvers.attempt import attempt
from resolvers.mutations.selection import mutation
from schema import ids
from schema.errors import UserError
from schema.payloads import DocumentPayload
from schema.permissions import IsStaff, ManagesAccounts
from schema.types import Document
from services.portal import documents
from services.shared.errors import ErrorCode


def _payload(document: object, errors: list) -> DocumentPayload:
    return DocumentPayload(
        errors=errors, document=Document.from_model(document) if document else None
    )


@strawberry.type
class DocumentMutations:
    @mutation(
        description="Adds a file to the account's documents (multipart request) and notifies "
        "the recipients who chose document uploads.",
        permission_classes=[IsStaff],
    )
    async def upload_document(
        self,
        info: Info,
        account_id: Annotated[strawberry.ID, strawberry.argument(description="The account's id.")],
        file: Annotated[
            Upload,
            strawberry.argument(
                description="The file, as a part of a multipart request "
                "(the GraphQL multipart request spec)."
            ),
        ],
    ) -> DocumentPayload:
        if not callable(getattr(file, "read", None)):  # a value, not a part of a multipart body
            message = "Send the file as a part of a multipart request."
            return DocumentPayload(
                errors=[UserError(code=ErrorCode.INVALID_FILE, field=["file"], message=message)]
            )
        document, errors = await attempt(
            info.context,
            documents.upload(
                info.context.scope,
                info.context.staff,
                ids.decode(account_id, "Account"),
                getattr(file, "filename", None),
                file.read,
                info.context.settings,
            ),
        )
        return _payload(document, errors)

    @mutation(
        description="Deletes a document: clients lose its download at once, and its file goes "
        "when nothing else refers to the same content.",
        permission_classes=[ManagesAccounts],
    )
    async def delete_document(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The document's id.")],
    ) -> DocumentPayload:
        document, errors = await attempt(
            info.context,
            documents.delete_document(
                info.context.scope,
                info.context.staff,
                ids.decode(id, "Document"),
                info.context.settings,
            ),
        )
        return _payload(document, errors)
