"""Mass mail (issue 14): the fast writer queues what the row-by-row path queued; a Mailing
shows its delivery going on through the API; 10,000 accounts fit in one mutation."""

from __future__ import annotations

import os
import re
import time
from typing import Any

import pytest
from jinja2 import DictLoader, Environment, FileSystemLoader, StrictUndefined, pass_context
from tortoise.transactions import in_transaction

from models import Account as AccountModel
from models import (
    AccountContact,
    AccountEmail,
    Contact,
    DeliveryStatus,
    EmailAddress,
    Firm,
    Mailing,
    OutboundEmail,
)
from schema import ids
from services.loops.delivery import deliver_due
from services.outbound import outbox, transport
from services.portal import notify
from services.shared.scope import FirmScope
from tests.support.api import Api, add_staff, api_for
from tests.support.crm_ops import ADD_EMAIL
from tests.support.crm_ops import LINK as LINK_CONTACT
from tests.support.login import FLAGS, activated_client, deliver, invitee
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)

MAILING_FIELDS = "id kind subject total queued sent failed cancelled createdAt"
SEND = f"""mutation($input: SendFirmEmailInput!) {{
  sendFirmEmail(input: $input) {{ errors {{ code field }} queued mailing {{ {MAILING_FIELDS} }} }} }}"""
NODE = f"query($id: ID!) {{ node(id: $id) {{ ... on Mailing {{ {MAILING_FIELDS} }} }} }}"
ARCHIVE = "mutation($id: ID!) { archiveAccount(id: $id) { errors { code } } }"
COPY = 'mutation { updateFirmSettings(input: {copyAddress: "archive@acme.example"}) { errors { code } } }'
# Columns both writers fill the same way (id, message_id, times and mailing_id aside).
SAME = (
    "firm_id",
    "account_id",
    "invitation_id",
    "kind",
    "category",
    "to_address",
    "from_name",
    "subject",
    "status",
    "attempts",
    "last_error",
    "lease_until",
    "sent_at",
    "mailbox_id",
    "thread_message_id",
    "headers",
    "filed_at",
)
MESSAGE_ID = re.compile(r"<outbox\.[0-9a-f]{32}@[^<>@\s]+>")


async def _notify_on(api, account_id: str) -> None:
    rows = (
        await api.data(
            "query($id: ID!) { account(id: $id) { emails { id } } }",
            {"id": account_id},
        )
    )["account"]["emails"]
    for row in rows:
        await api.ok(FLAGS, {"input": {"accountEmailId": row["id"], "notify": True}})


async def _written(settings, rows: list[OutboundEmail]) -> list[dict[str, Any]]:
    """What a row holds, bodies decrypted, in the order written."""
    return [
        {
            **{column: getattr(row, column) for column in SAME},
            "bodies": outbox.decrypt_bodies(settings, row),
        }
        for row in rows
    ]


async def test_the_fast_path_queues_what_the_row_by_row_path_queued(acme, settings):
    """Old path: `recipients` (model rows), `_mails`, `enqueue_many` (a model per row). New
    path: `queue_firm_email` (plain rows, rendering once per distinct text, one encryption
    per distinct body, multi-row INSERTs). Every column and body must match."""
    await acme.api.ok(COPY)
    anna = await invitee(acme.api, "Miller & <Sons>", "anna@miller.example")
    await acme.api.ok(
        ADD_EMAIL,
        {"c": anna.contact_id, "email": {"address": "Anna@Work.example", "label": "Work Email"}},
    )
    ben = await invitee(acme.api, "Other Family", "ben@other.example", first="Ben")
    await acme.api.ok(LINK_CONTACT, {"a": anna.account_id, "c": ben.contact_id})  # 2 accounts
    carl = await invitee(acme.api, "Carl Ltd", "carl@carl.example", first="Carl")
    quiet = await invitee(acme.api, "Quiet Family", "quiet@quiet.example", first="Quiet")
    gone = await invitee(acme.api, "Gone Family", "gone@gone.example", first="Gone")
    for who in (anna, ben, carl, gone):
        await _notify_on(acme.api, who.account_id)
    await acme.api.ok(ARCHIVE, {"id": gone.account_id})
    account_ids = [
        ids.decode(who.account_id, "Account") for who in (carl, anna, ben, quiet, gone, anna)
    ]
    scope = FirmScope(acme.owner.firm_id)
    firm = await Firm.get(pk=scope.firm_id)
    subject, body = "Ünïcode & <b>bold</b>", "Line one\nLine <two> & 'three'\n\n€"

    found = await notify.recipients(scope, [pk for pk in dict.fromkeys(account_ids) if pk])
    context = {"subject": subject, "body": body}
    mails = [m for r in found for m in notify._mails(firm, r, "firm_email", context, "MASS", None)]
    old = await _written(settings, await outbox.enqueue_many(firm.pk, firm.name, mails, settings))
    await OutboundEmail.all().delete()

    sent = await notify.queue_firm_email(scope, account_ids, subject, body, "MASS", settings)
    rows = await OutboundEmail.all().order_by("id")
    new = await _written(settings, rows)
    # Miller: anna x2 and ben (in two accounts: named), Other: ben, Carl; not Quiet (NOTIFY
    # off), not Gone (archived); each with the firm's copy.
    assert sent.queued == len(found) == 5
    assert new == old
    assert len(new) == 10
    assert {row["subject"] for row in new} == {
        subject,
        f"[Miller & <Sons>] {subject}",
        f"[Other Family] {subject}",
    }
    assert {row.mailing_id for row in rows} == {sent.mailing.pk}
    assert all(MESSAGE_ID.fullmatch(row.message_id) for row in rows)
    assert len({row.message_id for row in rows}) == len(rows)
    mailing = await Mailing.get(pk=sent.mailing.pk)
    assert (mailing.firm_id, mailing.kind, mailing.subject, mailing.total) == (
        firm.pk,
        "MASS",
        subject,
        10,
    )
    # The recipients' bodies are one text, encrypted once; each copy names its recipient
    # (ben@other.example twice: one text).
    bodies = [row.body_encrypted for row in rows]
    assert len(set(bodies[0::2])) == 1 and len(set(bodies[1::2])) == 4


async def test_the_fast_path_refuses_what_the_row_by_row_path_refused(acme, settings):
    scope = FirmScope(acme.owner.firm_id)
    context = {"subject": "s", "body": "b", "firm_name": "F", "account_name": "A"}
    good = outbox.Mail(
        "a@example.com",
        "firm_email",
        {**context, "copy_to": None, "name_account": False},
        "MASS",
    )
    bad_mails = [
        outbox.Mail("a@example.com, b@example.com", good.template, good.context, "MASS"),
        outbox.Mail(good.to, good.template, good.context, "k" * 33),
        outbox.Mail(good.to, good.template, good.context, "NOTIFICATION", None, "NOPE"),
        outbox.Mail("x" * 250 + "@example.com", good.template, good.context, "MASS"),
    ]
    for bad in bad_mails:
        with pytest.raises(ValueError):
            await outbox.enqueue_bulk(scope.firm_id, "F", [good, bad], settings)
    missing = outbox.Mail(good.to, good.template, {"subject": "s"}, "MASS")
    with pytest.raises(Exception, match="undefined"):
        await outbox.enqueue_bulk(scope.firm_id, "F", [good, missing], settings)
    assert await outbox.enqueue_bulk(scope.firm_id, "F", [], settings) == 0
    assert await OutboundEmail.all().count() == 0


async def test_a_mailing_shows_its_delivery_going_on(acme, settings, smtp):
    await acme.api.ok(COPY)
    accounts = []
    for i in range(4):
        who = await invitee(acme.api, f"Family {i}", f"client{i}@clients.example", first=f"C{i}")
        await _notify_on(acme.api, who.account_id)
        accounts.append(who.account_id)
    variables = {
        "input": {"accountIds": accounts, "subject": "Newsletter", "body": "Hi", "kind": "MASS"}
    }
    payload = await acme.api.ok(SEND, variables)
    mailing = payload["mailing"]
    assert payload["queued"] == 4
    assert {k: v for k, v in mailing.items() if k not in ("id", "createdAt")} == {
        "kind": "MASS",
        "subject": "Newsletter",
        "total": 8,
        "queued": 8,
        "sent": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert ids.decode(mailing["id"], "Mailing") == (await Mailing.get()).pk
    assert mailing["createdAt"].endswith("+00:00")

    async def counts() -> tuple[int, int, int, int]:
        """As a client sees them: the mailing read again through node(id:)."""
        read = (await acme.api.data(NODE, {"id": mailing["id"]}))["node"]
        assert read["total"] == 8
        return read["queued"], read["sent"], read["failed"], read["cancelled"]

    await acme.api.ok(ARCHIVE, {"id": accounts[0]})  # withdraws its two queued messages
    assert await counts() == (6, 0, 0, 2)
    mail_settings = settings.model_copy(update={"smtp_url": smtp.url})
    smtp.refuse_rcpt("550 5.1.1 no such user")
    assert await deliver_due(mail_settings, transport.transport_for(mail_settings), limit=2)
    assert await counts() == (4, 0, 2, 2)
    smtp.refuse_rcpt(None)
    await deliver(settings, smtp)
    assert await counts() == (0, 4, 2, 2)
    statuses = await OutboundEmail.all().values_list("status", flat=True)
    assert sorted(statuses).count(DeliveryStatus.SENT) == 4


async def test_a_mailing_is_read_by_its_firms_staff_only(acme, globex, client, settings, smtp):
    """Any staff member may send firm email, so any reads its mailings; another firm and
    clients read null."""
    who = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await _notify_on(acme.api, who.account_id)
    portal = await activated_client(acme.api, Api(client), settings, smtp, who.account_email_id)
    variables = {"input": {"accountIds": [who.account_id], "subject": "s", "body": "b"}}
    sent = (await acme.api.ok(SEND, variables))["mailing"]
    assert (sent["kind"], sent["total"], sent["queued"]) == ("DIRECT", 1, 1)
    employee = await api_for(client, await add_staff(acme, "emma@acme.example"))
    assert (await employee.data(NODE, {"id": sent["id"]}))["node"] == sent
    assert (await globex.api.data(NODE, {"id": sent["id"]}))["node"] is None
    assert (await portal.data(NODE, {"id": sent["id"]}))["node"] is None
    assert (await Api(client).data(NODE, {"id": sent["id"]}))["node"] is None


async def _many_accounts(firm_id: int, count: int) -> list[str]:
    """`count` accounts, each with one contact whose one address has NOTIFY on."""
    await AccountModel.bulk_create(
        [AccountModel(firm_id=firm_id, name=f"Bulk {i:05}", type="FAMILY") for i in range(count)]
    )
    await Contact.bulk_create(
        [Contact(firm_id=firm_id, first_name="C", last_name=str(i)) for i in range(count)]
    )
    accounts = (
        await AccountModel.filter(firm_id=firm_id).order_by("id").values_list("id", flat=True)
    )
    contacts = await Contact.filter(firm_id=firm_id).order_by("id").values_list("id", flat=True)
    await EmailAddress.bulk_create(
        [
            EmailAddress(
                firm_id=firm_id,
                contact_id=c,
                address=f"c{c}@bulk.example",
                address_normalized=f"c{c}@bulk.example",
            )
            for c in contacts
        ]
    )
    emails = await EmailAddress.filter(firm_id=firm_id).order_by("id").values_list("id", flat=True)
    await AccountContact.bulk_create(
        [
            AccountContact(firm_id=firm_id, account_id=a, contact_id=c)
            for a, c in zip(accounts, contacts, strict=True)
        ]
    )
    await AccountEmail.bulk_create(
        [
            AccountEmail(firm_id=firm_id, account_id=a, email_address_id=e, notify=True)
            for a, e in zip(accounts, emails, strict=True)
        ]
    )
    return [ids.encode("Account", a) for a in accounts]


async def test_a_long_body_to_hundreds_of_accounts_is_queued(acme, settings):
    """The longest body of short lines is about 2.7 MB encrypted (each line a <p> in the
    HTML): sent once per INSERT, not once per row (450 rows of it passed PostgreSQL's 1 GB
    message limit: "invalid message length")."""
    account_ids = await _many_accounts(acme.owner.firm_id, 450)
    body = "a\n" * 49_999 + "a"
    assert len(body) <= notify.MAX_BODY
    variables = {"input": {"accountIds": account_ids, "subject": "Long", "body": body}}
    payload = await acme.api.ok(SEND, variables)
    assert payload["queued"] == 450
    assert (payload["mailing"]["total"], payload["mailing"]["queued"]) == (450, 450)
    assert await OutboundEmail.filter(status=DeliveryStatus.QUEUED).count() == 450
    written = await OutboundEmail.all().order_by("id").values_list("id", flat=True)
    for pk in (written[0], written[-1]):
        row = await OutboundEmail.get(pk=pk)
        assert outbox.decrypt_bodies(settings, row).text.startswith("a\na\n")
        assert outbox.decrypt_bodies(settings, row).text.count("a\n") == 50_000  # + the footer


async def test_bulk_inserts_split_by_body_size_keep_each_rows_body(acme, settings, monkeypatch):
    """Distinct bodies over several statements (a batch holds at most BATCH_BODY_CHARS of
    them): every row still gets its own body and subject."""
    scope = FirmScope(acme.owner.firm_id)
    context = {"firm_name": "F", "account_name": "A", "name_account": False, "copy_to": None}
    mails = [
        outbox.Mail(
            f"c{i}@example.com",
            "firm_email",
            {**context, "subject": f"s{i % 4}", "body": f"body {i % 7} " + "x" * 500},
            "MASS",
        )
        for i in range(30)
    ]
    monkeypatch.setattr(outbox, "BATCH_BODY_CHARS", 5_000)  # about two bodies a statement
    assert await outbox.enqueue_bulk(scope.firm_id, "F", mails, settings) == 30
    rows = await OutboundEmail.all().order_by("id")
    assert [(row.to_address, row.subject) for row in rows] == [
        (mail.to, mail.context["subject"]) for mail in mails
    ]
    assert [outbox.decrypt_bodies(settings, row).text.split("\n")[0] for row in rows] == [
        mail.context["body"] for mail in mails
    ]


async def test_ten_thousand_accounts_in_one_mutation(acme, settings):
    account_ids = await _many_accounts(acme.owner.firm_id, 10_000)
    variables = {
        "input": {"accountIds": account_ids, "subject": "Moving", "body": "Hi", "kind": "MASS"}
    }
    started = time.perf_counter()
    payload = await acme.api.ok(SEND, variables)
    took = time.perf_counter() - started
    print(f"\nsendFirmEmail to 10,000 accounts: {took:.2f} s")  # reported, not asserted
    assert payload["queued"] == 10_000
    assert (payload["mailing"]["total"], payload["mailing"]["queued"]) == (10_000, 10_000)
    assert await OutboundEmail.filter(status=DeliveryStatus.QUEUED).count() == 10_000
    assert len(set(await OutboundEmail.all().values_list("to_address", flat=True))) == 10_000


def _outcome(render, template: str, context: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", render(template, context)
    except Exception as exc:  # a missing value or a method on None fails both ways alike
        return "error", type(exc)


def test_the_renderer_renders_what_render_renders():
    """Every template, with contexts that vary each value it reads among plain values (falsy,
    truthy, markup-looking, missing): one Renderer for all of them answers exactly as a
    fresh render() of each, errors included."""
    pool = [None, "", "Anna & <b>Co</b>", "x", True, False, 0, 1]
    templates = sorted({p.name.split(".")[0] for p in outbox.TEMPLATES.iterdir()})
    for template in templates:
        names = sorted(
            set().union(
                *(
                    outbox.loaded_names(  # type: ignore[arg-type]
                        outbox._templates.get_template(f"{template}.{part}")
                    )
                    for part in ("subject.txt", "txt", "html")
                )
            )
        )
        renderer = outbox.Renderer()
        base = {name: f"value of {name}" for name in names}
        contexts = [base]
        for name in names:
            contexts += [{**base, name: value} for value in pool]
            contexts.append({k: v for k, v in base.items() if k != name})
        for first in names:  # pairs of values: branches that depend on two names
            for second in names:
                contexts += [{**base, first: a, second: b} for a in pool[:3] for b in pool[:3]]
        for context in contexts:
            assert _outcome(renderer.render, template, context) == _outcome(
                outbox.render, template, context
            ), (template, context)


def _same_as_render(env: Environment, name: str, contexts: list[dict[str, Any]]) -> None:
    """One Renderer renders each context of template `name` (in `env`) as Template.render."""
    renderer = outbox.Renderer()
    for context in contexts:
        want = env.get_template(name).render(context)
        assert renderer._text(name, context) == want, (name, context)


def _environment(loader: Any) -> Environment:
    """The outbox's environment's settings, with other templates."""
    return Environment(
        loader=loader,
        autoescape=outbox._templates.autoescape,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def test_branches_reading_different_names_do_not_share_a_text(monkeypatch):
    """The key names every name a template loads with its value: two branches that read
    different names with equal values are two texts."""
    source = "{% if link %}{{ after }}: {{ link }}{% else %}{{ title }}{% endif %}"
    env = _environment(DictLoader({"branches.txt": source}))
    monkeypatch.setattr(outbox, "_templates", env)
    secret = "https://portal.example/secret-token-for-anna"
    _same_as_render(
        env,
        "branches.txt",
        [
            {"after": None, "link": secret, "title": "x"},
            {"after": "n", "link": None, "title": secret},
        ],
    )


def test_a_context_value_named_like_a_jinja_global_is_in_the_key(monkeypatch):
    """range, joiner, namespace, dict, cycler, lipsum are globals: a context value of that
    name is read all the same."""
    names = ("range", "joiner", "namespace", "dict", "cycler", "lipsum")
    templates = {f"global_{name}.txt": f"Hello {{{{ {name} }}}}" for name in names}
    env = _environment(DictLoader(templates))
    monkeypatch.setattr(outbox, "_templates", env)
    for name in names:
        _same_as_render(env, f"global_{name}.txt", [{name: "Anna"}, {name: "Ben"}, {}])


def test_a_template_file_changed_on_disk_is_analysed_again(monkeypatch, tmp_path):
    """The environment reloads a changed file; the Renderer's analysis follows it."""
    path = tmp_path / "changing.txt"
    path.write_text("{{ greeting }}")
    env = _environment(FileSystemLoader(tmp_path))
    monkeypatch.setattr(outbox, "_templates", env)
    _same_as_render(env, "changing.txt", [{"greeting": "Hi", "name": "Anna"}])
    path.write_text("{{ greeting }} {{ name }}")
    later = path.stat().st_mtime + 10
    os.utime(path, (later, later))  # a new mtime even on a coarse clock
    contexts = [{"greeting": "Hi", "name": "Anna"}, {"greeting": "Hi", "name": "Ben"}]
    _same_as_render(env, "changing.txt", contexts)


def test_a_filter_that_reads_the_context_keeps_the_template_unshared(monkeypatch):
    """A @pass_context filter may read any name: such a template renders every time."""
    env = _environment(DictLoader({"filter.txt": "Hello {{ 'x' | who }}"}))
    env.filters["who"] = pass_context(lambda context, value: context.get("name"))
    monkeypatch.setattr(outbox, "_templates", env)
    assert outbox.loaded_names(env.get_template("filter.txt")) is None
    _same_as_render(env, "filter.txt", [{"name": "Anna"}, {"name": "Ben"}])


async def test_a_mailing_is_written_batch_by_batch_not_held_whole(acme, settings, monkeypatch):
    """Rows go to the database as soon as a batch is full, before the next mails are even
    encrypted: a mailing of many distinct long bodies (the firm's copies) is never in memory
    whole."""
    scope = FirmScope(acme.owner.firm_id)
    context = {"firm_name": "F", "account_name": "A", "name_account": False, "copy_to": None}
    mails = [
        outbox.Mail(
            f"c{i}@example.com", "firm_email", {**context, "subject": "s", "body": f"{i} x"}, "MASS"
        )
        for i in range(12)
    ]
    events: list[str] = []
    encrypt, insert = outbox.encrypt_bodies, outbox._insert

    def encrypting(*args: Any) -> str:
        events.append("encrypt")
        return encrypt(*args)

    async def inserting(rows: list[Any], postgres: bool) -> None:
        events.append(f"insert {len(rows)}")
        await insert(rows, postgres)

    monkeypatch.setattr(outbox, "encrypt_bodies", encrypting)
    monkeypatch.setattr(outbox, "_insert", inserting)
    monkeypatch.setattr(outbox, "BATCH", 5)
    async with in_transaction():
        assert await outbox.enqueue_bulk(scope.firm_id, "F", mails, settings) == 12
    # The sixth row fills no batch of five: the five before it are written first.
    assert events == [
        *["encrypt"] * 6,
        "insert 5",
        *["encrypt"] * 5,
        "insert 5",
        "encrypt",
        "insert 2",
    ]
    assert await OutboundEmail.all().count() == 12
