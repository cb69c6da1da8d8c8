"""The child lists the API pages through paging.keyset_pages, each in the order its old,
unpaged field shows. One difference: Contact.accountsPage sorts names with the database's
LOWER, as Query.accounts does, where the deprecated Contact.accounts sorts with Python's
casefold; the two agree on ASCII names and may differ beyond."""

from __future__ import annotations

from services.shared.paging import Listing

# Account.auditEntriesPage: newest first, as Account.auditEntries (by id).
AUDIT_BY_ACCOUNT = Listing(
    source='"audit_entry" t',
    parent="t.account_id",
    id="t.id",
    keys=(),
    key_types=(),
    where="t.firm_id = {firm}",
    descending=True,
)

# Account.invitationsPage: newest first, as Account.invitations (by id).
INVITATIONS_BY_ACCOUNT = Listing(
    source='"invitation" t',
    parent="t.account_id",
    id="t.id",
    keys=(),
    key_types=(),
    where="t.firm_id = {firm}",
    descending=True,
)

# An invitation's status in SQL, as tokens.link_status decides it (accepted, then revoked,
# then expired at `{now}`); {now} is the caller's parameter.
INVITATION_STATUS = {
    "ACCEPTED": "t.accepted_at IS NOT NULL",
    "REVOKED": "t.accepted_at IS NULL AND t.revoked_at IS NOT NULL",
    "EXPIRED": "t.accepted_at IS NULL AND t.revoked_at IS NULL AND t.expires_at <= {now}",
    "PENDING": "t.accepted_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > {now}",
}


def invitations_by_account(status: str | None) -> Listing:
    """Account.invitationsPage, only the invitations in `status` when given."""
    if status is None:
        return INVITATIONS_BY_ACCOUNT
    return Listing(
        source=INVITATIONS_BY_ACCOUNT.source,
        parent=INVITATIONS_BY_ACCOUNT.parent,
        id=INVITATIONS_BY_ACCOUNT.id,
        keys=(),
        key_types=(),
        where=f"t.firm_id = {{firm}} AND {INVITATION_STATUS[status]}",
        descending=True,
    )


# Contact.accountsPage: by name, case-insensitively (LOWER, as Query.accounts), then id.
ACCOUNTS_BY_CONTACT = Listing(
    source='"account_contact" l JOIN "account" a ON a.id = l.account_id',
    parent="l.contact_id",
    id="a.id",
    keys=("LOWER(a.name)",),
    key_types=(str,),
    where="l.firm_id = {firm} AND a.firm_id = {firm}",
)
