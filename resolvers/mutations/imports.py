"""importContacts (placeholder until the CSV import lands)."""

from __future__ import annotations

import strawberry


@strawberry.type
class ImportMutations:
    pass
