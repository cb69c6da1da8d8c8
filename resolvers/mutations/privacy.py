"""exportContactData and eraseContact (GDPR; staff with the manage-accounts right)."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from resolvers.attempt import attempt
from resolvers.mutations.selection import mutation
from schema import ids
from schema.payloads import DataExportPayload, ErasurePayload
from schema.permissions import ManagesAccounts
from services.crm import erasure, privacy


@strawberry.type
class PrivacyMutations:
    @mutation(
        description="A link, valid for 15 minutes and without a session, to a ZIP of the "
        "contact's data (data.json) and the documents of the accounts where the contact is "
        "the only one linked.",
        permission_classes=[ManagesAccounts],
    )
    async def export_contact_data(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The contact's id.")],
    ) -> DataExportPayload:
        link, errors = await attempt(
            info.context,
            privacy.export_link(
                info.context.scope,
                info.context.staff,
                ids.decode(id, "Contact"),
                info.context.settings,
            ),
        )
        return DataExportPayload(
            errors=errors,
            download_url=link.url if link else None,
            expires_at=link.expires_at if link else None,
        )

    @mutation(
        description="Erases a contact: the person's data goes, the firm's records keep a "
        "tombstone instead of the address; answers what was erased and what was kept.",
        permission_classes=[ManagesAccounts],
    )
    async def erase_contact(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The contact's id.")],
    ) -> ErasurePayload:
        result, errors = await attempt(
            info.context,
            erasure.erase_contact(
                info.context.scope,
                info.context.staff,
                ids.decode(id, "Contact"),
                info.context.settings,
            ),
        )
        if result is None:
            return ErasurePayload(errors=errors)
        return ErasurePayload(errors=errors, erased=result.erased, kept=result.kept)
