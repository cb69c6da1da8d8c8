"""The outbox: queued in the caller's transaction, rendered, encrypted, injection-proof."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.utils import parseaddr

import pytest
from cryptography.fernet import InvalidToken
from jinja2 import UndefinedError
from tortoise.transactions import in_transaction

from models import Account, AccountType, DeliveryStatus, Firm, OutboundEmail
from portico.settings import Settings
from services.loops.delivery import deliver_due
from services.outbound import outbox
from services.outbound.transport import FileTransport, build_message, transport_for
from services.shared import crypto

LINK = "https://portal.example/invitation?token=SECRET-TOKEN-123"
EXPIRES = datetime(2030, 3, 4, 14, 5, tzinfo=UTC)


async def make_firm(name: str = "Acme & Sons LLP", slug: str = "acme") -> Firm:
    return await Firm.create(name=name, slug=slug)


async def invite(
    settings: Settings,
    firm: Firm,
    *,
    to: str = "client@example.com",
    account_name: str = "Miller Family",
    account_id: int | None = None,
) -> OutboundEmail:
    return await outbox.enqueue(
        firm_id=firm.pk,
        firm_name=firm.name,
        to=to,
        template="invitation",
        context={
            "firm_name": firm.name,
            "account_name": account_name,
            "link": LINK,
            "expires_at": EXPIRES,
        },
        kind="INVITATION",
        settings=settings,
        account_id=account_id,
    )


async def test_enqueue_rolls_back_with_the_callers_transaction(settings):
    firm = await make_firm()
    with pytest.raises(RuntimeError):
        async with in_transaction():
            account = await Account.create(firm_id=firm.pk, name="Miller", type=AccountType.FAMILY)
            await invite(settings, firm, account_id=account.pk)
            raise RuntimeError("the change fails after the mail was queued")
    assert await Account.filter(firm_id=firm.pk).count() == 0
    assert await OutboundEmail.all().count() == 0

    async with in_transaction():
        account = await Account.create(firm_id=firm.pk, name="Miller", type=AccountType.FAMILY)
        await invite(settings, firm, account_id=account.pk)
    [row] = await OutboundEmail.all()
    assert row.account_id == account.pk and row.status == DeliveryStatus.QUEUED
    assert row.attempts == 0 and row.lease_until is None
    assert row.next_attempt_at <= datetime.now(UTC)


async def test_rendered_invitation(settings):
    settings = settings.model_copy(update={"mail_from": "Portico <mail@portico.example>"})
    firm = await make_firm()
    row = await invite(settings, firm, account_name="Miller <b>Family</b>")
    assert row.subject == "Acme & Sons LLP invites you to the Miller <b>Family</b> client portal"
    assert row.from_name == "Acme & Sons LLP" and row.kind == "INVITATION"
    assert row.message_id.startswith("<outbox.") and row.message_id.endswith("@portico.example>")

    message = build_message(row, outbox.decrypt_bodies(settings, row), settings)
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parseaddr(parsed["From"]) == ("Acme & Sons LLP", "mail@portico.example")
    assert parsed["To"] == "client@example.com"
    assert parsed["Message-ID"] == row.message_id and parsed["Date"]
    text = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    for body in (text, html):
        assert LINK in body
        assert "4 March 2030, 14:05 UTC" in body
    assert "Acme & Sons LLP invites you" in text and "Miller <b>Family</b>" in text
    # HTML escapes user input: the account's name cannot add markup.
    assert "Miller &lt;b&gt;Family&lt;/b&gt;" in html and "<b>Family" not in html
    assert "Acme &amp; Sons LLP" in html


async def test_non_ascii_names_are_encoded(settings):
    firm = await make_firm(name='Müller & Söhne, "Steuer"')
    row = await invite(settings, firm, account_name="Gruß Family")
    raw = build_message(row, outbox.decrypt_bodies(settings, row), settings).as_bytes()
    assert raw.isascii()  # RFC 2047 words in the headers, a transfer encoding in the bodies
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parseaddr(parsed["From"])[0] == 'Müller & Söhne, "Steuer"'
    assert "Gruß Family" in parsed["Subject"]
    assert "Gruß Family" in parsed.get_body(("plain",)).get_content()


async def test_staff_password_template(settings):
    firm = await make_firm()
    row = await outbox.enqueue(
        firm_id=firm.pk,
        firm_name=firm.name,
        to="new.member@acme.example",
        template="staff_password",
        context={"firm_name": firm.name, "member_name": "Ada", "link": LINK, "expires_at": EXPIRES},
        kind="STAFF_ONBOARDING",
        settings=settings,
    )
    bodies = outbox.decrypt_bodies(settings, row)
    assert row.subject == "Set your password for Acme & Sons LLP on Portico"
    assert "Hello Ada," in bodies.text and LINK in bodies.text and LINK in bodies.html


async def test_a_missing_template_value_is_an_error_not_a_blank(settings):
    firm = await make_firm()
    with pytest.raises(UndefinedError):
        await outbox.enqueue(
            firm_id=firm.pk,
            firm_name=firm.name,
            to="client@example.com",
            template="invitation",
            context={"firm_name": firm.name, "account_name": "X", "expires_at": EXPIRES},
            kind="INVITATION",
            settings=settings,
        )
    assert await OutboundEmail.all().count() == 0


async def test_bodies_are_stored_encrypted(settings):
    firm = await make_firm()
    row = await invite(settings, firm)
    stored = await OutboundEmail.get(pk=row.pk)
    assert "SECRET-TOKEN-123" not in stored.body_encrypted
    assert "SECRET-TOKEN-123" not in stored.subject
    assert LINK in outbox.decrypt_bodies(settings, stored).text
    # Another key (another installation, or a lost var/secret.key) cannot read it.
    other = settings.model_copy(update={"secret_key": "another secret"})
    with pytest.raises(InvalidToken):
        outbox.decrypt_bodies(other, stored)


async def test_header_injection_is_neutralised(settings):
    firm = await make_firm(name="Evil LLP\r\nBcc: victim@evil.example")
    row = await invite(settings, firm, account_name="Miller\nBcc: second@evil.example\rX-Y: 1")
    assert "\r" not in row.subject and "\n" not in row.subject
    assert "\r" not in row.from_name and "\n" not in row.from_name

    raw = build_message(row, outbox.decrypt_bodies(settings, row), settings).as_bytes()
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Bcc"] is None and parsed["X-Y"] is None
    assert parsed.get_all("To") == ["client@example.com"]
    assert parseaddr(parsed["From"])[0] == "Evil LLP Bcc: victim@evil.example"
    assert parsed["Subject"].startswith("Evil LLP Bcc: victim@evil.example invites you")

    for bad in (
        "client@example.com\r\nBcc: victim@evil.example",
        "client@example.com\nBcc: victim@evil.example",
        "client@example.com, victim@evil.example",
        "Client <client@example.com>",
        "not an address",
        "",
    ):
        with pytest.raises(ValueError):
            await invite(settings, firm, to=bad)
    assert await OutboundEmail.all().count() == 1


async def test_unknown_category_and_overlong_kind_are_refused(settings):
    firm = await make_firm()
    base = {
        "firm_id": firm.pk,
        "firm_name": firm.name,
        "to": "client@example.com",
        "template": "staff_password",
        "context": {"firm_name": "A", "member_name": "B", "link": LINK, "expires_at": EXPIRES},
        "settings": settings,
    }
    with pytest.raises(ValueError):
        await outbox.enqueue(**base, kind="NOTIFICATION", category="NOT_A_CATEGORY")
    with pytest.raises(ValueError):
        await outbox.enqueue(**base, kind="k" * 33)
    row = await outbox.enqueue(**base, kind="NOTIFICATION", category="DOCUMENT_UPLOADS")
    assert row.category == "DOCUMENT_UPLOADS"


async def test_message_ids_are_unique(settings):
    firm = await make_firm()
    rows = [await invite(settings, firm) for _ in range(20)]
    assert len({row.message_id for row in rows}) == 20


async def test_file_transport_writes_a_parseable_eml(settings):
    assert settings.smtp_url is None
    transport = transport_for(settings)
    assert isinstance(transport, FileTransport)
    firm = await make_firm()
    row = await invite(settings, firm)
    assert await deliver_due(settings, transport) == 1

    [path] = settings.outbox_dir.iterdir()  # one file, no temporary left behind
    assert path.name.startswith(f"{row.pk}-outbox.") and path.suffix == ".eml"
    parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert parsed["Message-ID"] == row.message_id and parsed["To"] == "client@example.com"
    assert LINK in parsed.get_body(("plain",)).get_content()
    sent = await OutboundEmail.get(pk=row.pk)
    assert sent.status == DeliveryStatus.SENT and sent.attempts == 1 and sent.sent_at

    # Writing the same message again (a retry) replaces the file instead of adding one.
    await transport.send(build_message(sent, outbox.decrypt_bodies(settings, sent), settings))
    assert len(list(settings.outbox_dir.iterdir())) == 1


def test_generated_secret_key_is_private_and_stable(tmp_path):
    settings = Settings(var_dir=tmp_path / "var", _env_file=None)
    first = crypto.secret_key(settings)
    path = tmp_path / "var" / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert crypto.secret_key(settings) == first and len(first) >= 40
    token = crypto.fernet(settings, "test").encrypt(b"x")
    again = Settings(var_dir=tmp_path / "var", _env_file=None)
    assert crypto.fernet(again, "test").decrypt(token) == b"x"
    # Keys are per purpose: one purpose's ciphertext does not open with another's key.
    with pytest.raises(InvalidToken):
        crypto.fernet(again, "other").decrypt(token)


def test_configured_secret_key_wins_and_production_requires_one(tmp_path):
    settings = Settings(var_dir=tmp_path / "var", secret_key="s3cret", _env_file=None)
    assert crypto.secret_key(settings) == "s3cret"
    assert not (tmp_path / "var" / "secret.key").exists()
    production = Settings(env="production", var_dir=tmp_path / "var", _env_file=None)
    with pytest.raises(crypto.MissingSecretKey, match="PORTICO_SECRET_KEY"):
        crypto.fernet(production, "outbox-body")
    assert not (tmp_path / "var" / "secret.key").exists()


async def test_enqueue_in_production_without_a_secret_key_fails_clearly(settings):
    firm = await make_firm()
    production = settings.model_copy(update={"env": "production", "secret_key": None})
    with pytest.raises(crypto.MissingSecretKey):
        await invite(production, firm)
    assert await OutboundEmail.all().count() == 0


async def test_delivery_node_maps_the_row(settings):
    from schema.delivery import Delivery, DeliveryKind, DeliveryStatus, NotificationCategory

    firm = await make_firm()
    row = await invite(settings, firm)
    row.category = "INVOICES_AND_PAYMENTS"
    node = Delivery.from_model(row)
    assert node.to == "client@example.com" and node.kind == DeliveryKind.INVITATION
    assert node.status == DeliveryStatus.QUEUED and node.attempts == 0
    assert node.category == NotificationCategory.INVOICES_AND_PAYMENTS
    row.category = None
    assert Delivery.from_model(row).category is None
    assert node.created_at <= datetime.now(UTC) + timedelta(seconds=1)
