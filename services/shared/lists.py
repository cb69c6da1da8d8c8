"""The child lists the API pages through paging.keyset_pages, each in the order its old,
unpaged field shows. One difference: Contact.accountsPage sorts names with the database's
LOWER, as Query.accounts does, where the deprecated Contact.accounts sorts with Python's
casefold; the two agree on ASCII names and may differ beyond."""

from __future__ import annotations

from services.shared.paging import Listing


def _newest_of_account(table: str, condition: str | None = None) -> Listing:
    """An account's rows of `table` in the viewer's firm, newest (highest id) first, as the
    old unpaged lists show them; `condition` keeps only some."""
    where = "t.firm_id = {firm}" + (f" AND {condition}" if condition else "")
    return Listing(
        source=f'"{table}" t',
        parent="t.account_id",
        id="t.id",
        keys=(),
        key_types=(),
        where=where,
        descending=True,
    )


# Account.auditEntriesPage, as Account.auditEntries.
AUDIT_BY_ACCOUNT = _newest_of_account("audit_entry")

# An invitation's status in SQL, as tokens.link_status decides it (accepted, then revoked,
# then expired at `{now}`); {now} is the caller's parameter.
INVITATION_STATUS = {
    "ACCEPTED": "t.accepted_at IS NOT NULL",
    "REVOKED": "t.accepted_at IS NULL AND t.revoked_at IS NOT NULL",
    "EXPIRED": "t.accepted_at IS NULL AND t.revoked_at IS NULL AND t.expires_at <= {now}",
    "PENDING": "t.accepted_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > {now}",
}


def invitations_by_account(status: str | None) -> Listing:
    """Account.invitationsPage (as Account.invitations), only those in `status` when given."""
    return _newest_of_account("invitation", INVITATION_STATUS[status] if status else None)


# Contact.accountsPage: by name, case-insensitively (LOWER, as Query.accounts), then id.
ACCOUNTS_BY_CONTACT = Listing(
    source='"account_contact" l JOIN "account" a ON a.id = l.account_id',
    parent="l.contact_id",
    id="a.id",
    keys=("LOWER(a.name)",),
    key_types=(str,),
    where="l.firm_id = {firm} AND a.firm_id = {firm}",
)
