"""The codes and statuses are GraphQL enums whose values travel as the same strings as before
(contract, "Amendments (turn 2)"); the enums cannot drift from what the services write."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

from graphql import GraphQLEnumType, GraphQLNonNull

import models
from portico.settings import Settings
from resolvers.root import build_schema
from schema import enums, ids
from schema.errors import CODE_DESCRIPTIONS
from services.mail import alerts, store
from services.outbound import outbox
from services.portal import notify
from services.shared.errors import ErrorCode
from tests.support.api import Firm
from tests.support.crm_ops import CREATE_ACCOUNT, new_account, new_contact
from tests.support.imap import ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.login import FLAGS, STATUS, invitee, login_on
from tests.support.mail import ANNA, add_mailbox, mail

SERVICES = Path(__file__).resolve().parent.parent / "services"


def schema_enum(type_name: str, field: str) -> GraphQLEnumType:
    """The enum a field of the built schema answers (nullable or not)."""
    built = build_schema(Settings(_env_file=None))._schema
    of = built.type_map[type_name].fields[field].type
    of = of.of_type if isinstance(of, GraphQLNonNull) else of
    assert isinstance(of, GraphQLEnumType), f"{type_name}.{field} is {of}, not an enum"
    return of


def values(enum: type[Enum]) -> set[str]:
    return {member.value for member in enum}


# ---------------------------------------------------------------- the schema's enums


def test_each_code_and_status_field_is_an_enum_of_the_same_strings() -> None:
    expected = {
        ("UserError", "code"): ("ErrorCode", values(ErrorCode)),
        ("Mailbox", "syncStatus"): ("MailboxSyncStatus", values(models.SyncStatus)),
        ("HistoryImport", "status"): ("HistoryImportStatus", values(models.HistoryStatus)),
        ("Message", "direction"): ("MessageDirection", {"INBOUND", "OUTBOUND"}),
        ("Delivery", "kind"): ("DeliveryKind", values(enums.DeliveryKind)),
        ("Delivery", "status"): ("DeliveryStatus", values(models.DeliveryStatus)),
        ("AuditEntry", "action"): ("AuditAction", values(enums.AuditAction)),
    }
    for (type_name, field), (enum_name, strings) in expected.items():
        found = schema_enum(type_name, field)
        assert found.name == enum_name
        # A value's GraphQL name is the string the wire carries: the one stored.
        assert set(found.values) == strings, (type_name, field)


def test_error_code_is_every_service_code_and_each_is_described() -> None:
    """ErrorCode is built from services.shared.errors.ErrorCode, so a new member appears by
    itself; its description is looked up by name (test_schema_descriptions names a missing
    one), and a description of a code that no longer exists fails at import."""
    found = schema_enum("UserError", "code")
    assert set(found.values) == {member.name for member in ErrorCode}
    assert set(CODE_DESCRIPTIONS) - set(found.values) == set(), "descriptions of no code"
    assert {name for name, value in found.values.items() if not value.description} == set()


# ---------------------------------------------------------------- what the services write


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SERVICES.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _constants(tree: ast.Module) -> dict[str, ast.expr]:
    """The module-level NAME = value assignments of a module."""
    found: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                found[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            found[node.target.id] = node.value
    return found


def _all_constants() -> dict[str, set[str]]:
    """Every module-level string constant (or tuple/frozenset of strings) of the services, by
    name; names defined alike in several modules merge."""
    assigned = [item for _, tree in _modules() for item in _constants(tree).items()]
    found: dict[str, set[str]] = {}
    for _ in range(3):  # aliases of aliases (DIGEST_KIND = outbox.STAFF_DIGEST_KIND)
        for name, value in assigned:
            strings = _strings(value, found)
            if strings is not None:
                found.setdefault(name, set()).update(strings)
    return found


def _strings(node: ast.expr, names: dict[str, set[str]]) -> set[str] | None:
    """The strings an expression can be, or None when it is not made of constants."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        body, orelse = _strings(node.body, names), _strings(node.orelse, names)
        return body | orelse if body is not None and orelse is not None else None
    if isinstance(node, ast.Name | ast.Attribute):
        key = node.id if isinstance(node, ast.Name) else node.attr
        return names.get(key)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        parts = [_strings(e, names) for e in node.elts]
        return set().union(*parts) if all(p is not None for p in parts) else None
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "frozenset" and node.args:
        return _strings(node.args[0], names)
    return None


def _callee(node: ast.Call) -> str:
    """`name` or `module.name` of what is called."""
    func = node.func
    if isinstance(func, ast.Attribute):
        base = func.value.id + "." if isinstance(func.value, ast.Name) else ""
        return base + func.attr
    return getattr(func, "id", "")


def written(
    callees: set[str], keyword: str, position: int | None = None
) -> tuple[set[str], list[str]]:
    """The strings the services pass as `keyword` (or positional argument `position`) to
    calls of `callee`; and the places where the value is not a constant (a parameter passed
    through, which must come from a constant elsewhere)."""
    names = _all_constants()
    found: set[str] = set()
    unknown: list[str] = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _callee(node) not in callees:
                continue
            given = [k.value for k in node.keywords if k.arg == keyword]
            if not given and position is not None and len(node.args) > position:
                given = [node.args[position]]
            for value in given:
                strings = _strings(value, names)
                if strings is None:
                    unknown.append(f"{path.name}:{node.lineno}")
                else:
                    found |= strings
    return found, unknown


def test_every_audit_action_the_services_record_is_in_the_enum() -> None:
    actions, unknown = written({"audit.record"}, "action", 1)
    assert unknown == [], "audit.record with an action that is not a constant"
    assert len(actions) >= 15  # the scan found the calls
    assert actions - values(enums.AuditAction) == set()


def test_every_mail_kind_the_services_queue_is_in_the_enum() -> None:
    # Keyword or positional `kind` of every way a row is queued; a `kind` parameter passed
    # through is checked where its constant is written.
    queued = {"outbox.enqueue", "enqueue", "outbox.enqueue_written", "enqueue_written"}
    kinds, _ = written(queued | {"OutboundEmail", "OutboundEmail.create"}, "kind")
    kinds |= written({"outbox.Mail", "Mail"}, "kind", 3)[0]
    kinds |= written({"_mails"}, "kind", 4)[0]
    kinds |= set(notify.FIRM_EMAIL_KINDS) | set(outbox.PORTAL_MAIL_KINDS) | outbox.STAFF_KINDS
    kinds.add(outbox.REPLY_KIND)
    assert {"INVITATION", "NOTIFICATION", "STAFF_ONBOARDING", "REPLY"} <= kinds
    assert kinds - values(enums.DeliveryKind) == set()


def test_every_message_direction_the_services_store_is_in_the_enum() -> None:
    assert {store.INBOUND, store.OUTBOUND, alerts.INBOUND} == values(enums.MessageDirection)


# ---------------------------------------------------------------- over the wire, both DBs

AUDIT = """query($id: ID!) { account(id: $id) {
  deliveries { edges { node { kind status } } }
  auditEntries { id action } } }"""
NODE = "query($id: ID!) { node(id: $id) { id } }"


async def test_codes_kinds_and_actions_travel_as_the_same_strings(acme: Firm) -> None:
    api = acme.api
    refused = await api.data(CREATE_ACCOUNT, {"input": {"name": "", "type": "FAMILY"}})
    assert refused["createAccount"]["errors"][0]["code"] == "INVALID_NAME"

    client = await invitee(api, "Miller Family", ANNA)
    await login_on(api, client.account_email_id)
    account = (await api.data(AUDIT, {"id": client.account_id}))["account"]
    assert [e["node"] for e in account["deliveries"]["edges"]] == [
        {"kind": "INVITATION", "status": "QUEUED"}
    ]
    actions = [e["action"] for e in account["auditEntries"]]
    assert {"FLAGS_CHANGED", "INVITATION_SENT"} <= set(actions)

    # Each entry has an id of its own, the same on every read, that node() does not resolve.
    entry_ids = [e["id"] for e in account["auditEntries"]]
    assert len(set(entry_ids)) == len(entry_ids) and all(entry_ids)
    again = (await api.data(AUDIT, {"id": client.account_id}))["account"]["auditEntries"]
    assert [e["id"] for e in again] == entry_ids
    assert ids.parse(entry_ids[0])[0] == "AuditEntry"
    assert (await api.data(NODE, {"id": entry_ids[0]}))["node"] is None


MAILBOX = """{ mailboxes { syncStatus historyImports { id status } } }"""
SYNC = "mutation($id: ID!) { syncMailbox(id: $id) { errors { code } mailbox { syncStatus } } }"
INBOX = """{ inbox(first: 10) { edges { node { subject direction
  attachments { id filename } } } } }"""


async def test_mail_statuses_and_directions_travel_as_the_same_strings(
    acme: Firm, settings: Settings, imap: ImapServer
) -> None:
    api = acme.api
    mailbox = await add_mailbox(acme.owner.firm_id, imap, settings)
    account = await new_account(api, "Miller Family")
    await new_contact(api, "Anna", "Miller", [(ANNA, "Email")], [account["id"]])
    [row] = (await api.data(STATUS, {"id": account["id"]}))["account"]["emails"]
    await api.ok(FLAGS, {"input": {"accountEmailId": row["id"], "emailSync": True}})
    [waiting] = (await api.data(MAILBOX))["mailboxes"][0]["historyImports"]
    assert waiting["status"] == "PENDING" and ids.parse(waiting["id"])[0] == "HistoryImport"

    user = mailbox.username
    files = [
        ("a.pdf", "application/pdf", b"%PDF-1.4 one"),
        ("b.pdf", "application/pdf", b"%PDF two"),
    ]
    imap.append(user, mail(ANNA, user, "From Anna", attachments=files))
    imap.append(user, mail(user, ANNA, "To Anna"))
    synced = await api.data(SYNC, {"id": ids.encode("Mailbox", mailbox.pk)})
    assert synced["syncMailbox"] == {"errors": [], "mailbox": {"syncStatus": "IDLE"}}

    nodes = {e["node"]["subject"]: e["node"] for e in (await api.data(INBOX))["inbox"]["edges"]}
    assert nodes["From Anna"]["direction"] == "INBOUND"
    assert nodes["To Anna"]["direction"] == "OUTBOUND"
    attachment_ids = [a["id"] for a in nodes["From Anna"]["attachments"]]
    assert len(set(attachment_ids)) == 2
    assert {ids.parse(i)[0] for i in attachment_ids} == {"Attachment"}
    assert (await api.data(NODE, {"id": attachment_ids[0]}))["node"] is None
    again = (await api.data(INBOX))["inbox"]["edges"]
    assert [a["id"] for e in again for a in e["node"]["attachments"]] == attachment_ids
