"""Helpers for the LOGIN tests: an account with a contact, mail delivery, invitation links."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage

from models import OutboundEmail, PortalAccess, PortalUser
from portico.settings import Settings
from schema import ids
from services.loops.delivery import deliver_due
from services.outbound.transport import transport_for
from services.shared import sessions
from services.shared.sessions import now
from tests.support.api import Api
from tests.support.crm_ops import new_account, new_contact
from tests.support.smtp import SmtpServer

FLAGS = """
mutation($input: SetEmailFlagsInput!) {
  setEmailFlags(input: $input) {
    errors { code field message }
    accountEmail {
      id login notify emailSync portalStatus
      latestInvitation { id email status sentAt expiresAt acceptedAt }
    }
  }
}
"""
ACCEPT = """
mutation($token: String!, $password: String) {
  acceptInvitation(token: $token, password: $password) {
    errors { code field message }
    token
    viewer { __typename ... on PortalUser { email activatedAt } }
    accounts { id name }
    currentAccount { id name }
  }
}
"""
SIGN_IN = """
mutation($firm: String!, $email: String!, $password: String!) {
  signIn(firm: $firm, email: $email, password: $password) {
    errors { code message } token accounts { id name } currentAccount { id name }
  }
}
"""
RESEND = """
mutation($id: ID!) {
  resendInvitation(accountEmailId: $id) { errors { code } invitation { id email status } }
}
"""
STATUS = """
query($id: ID!) {
  account(id: $id) {
    emails { id portalStatus login emailAddress { address } latestInvitation { status } }
    unlinkedEmails { id linked portalUser { email } }
    invitations { email status }
  }
}
"""
CLIENT_VIEW = "{ portalAccounts { id name } currentAccount { id name } accountNotice }"
CLIENT_PASSWORD = "client-password-9"
LINK = re.compile(r"/invitation\?token=([A-Za-z0-9_\-]+)")


@dataclass
class Invitee:
    account_id: str
    contact_id: str
    email_id: str
    account_email_id: str


async def invitee(api: Api, account: str, address: str, first: str = "Anna") -> Invitee:
    acct = await new_account(api, account)
    contact = await new_contact(api, first, "Client", [(address, "Email")], [acct["id"]])
    data = await api.data(STATUS, {"id": acct["id"]})
    [row] = data["account"]["emails"]
    return Invitee(acct["id"], contact["id"], contact["emailAddresses"][0]["id"], row["id"])


async def portal_user(firm_id: int, email: str = "anna@miller.example") -> PortalUser:
    """An activated client user, made directly (its sessions are started by the test)."""
    return await PortalUser.create(
        firm_id=firm_id,
        email=email,
        email_normalized=email.lower(),
        password_hash="unused",
        activated_at=now(),
    )


async def deliver(settings: Settings, smtp: SmtpServer) -> list[EmailMessage]:
    """Runs the worker's delivery until the queue is empty; the messages received so far."""
    mail_settings = settings.model_copy(update={"smtp_url": smtp.url})
    transport = transport_for(mail_settings)
    while await deliver_due(mail_settings, transport):
        pass
    # In the order they were queued: a worker sends several at once, so they may arrive in
    # another.
    queued = dict(await OutboundEmail.all().values_list("message_id", "id"))
    return sorted(smtp.messages, key=lambda message: queued.get(str(message["Message-ID"]), 0))


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return part.get_content()


def token_in(message: EmailMessage) -> str:
    match = LINK.search(text_of(message))
    assert match, text_of(message)
    return match.group(1)


async def login_on(api: Api, account_email_id: str, send: bool = True) -> dict:
    variables = {
        "input": {"accountEmailId": account_email_id, "login": True, "sendInvitation": send}
    }
    return (await api.ok(FLAGS, variables))["accountEmail"]


async def accept(api: Api, token: str, password: str | None = CLIENT_PASSWORD) -> dict:
    data = await api.data(ACCEPT, {"token": token, "password": password})
    return data["acceptInvitation"]


async def activated_client(
    staff: Api, client: Api, settings: Settings, smtp: SmtpServer, account_email_id: str
) -> Api:
    """LOGIN on, the invitation delivered and accepted: the client's own signed-in Api."""
    await login_on(staff, account_email_id)
    [mail] = await deliver(settings, smtp)
    accepted = await accept(client, token_in(mail))
    assert accepted["errors"] == [], accepted["errors"]
    return Api(client.http, accepted["token"])


async def portal_token(acme, account_id: str) -> str:
    """The session token of a portal user with access to the account (Anna)."""
    user = await portal_user(acme.owner.firm_id)
    pk = ids.decode(account_id, "Account")
    await PortalAccess.create(firm_id=acme.owner.firm_id, account_id=pk, portal_user=user)
    token, _ = await sessions.start_client_session(user, timedelta(hours=1), pk)
    return token


AUDIT = """
query($id: ID!) { account(id: $id) { auditEntries { action actor email before after } } }
"""


async def audit_entries(api: Api, account_id: str, action: str | None = None) -> list[dict]:
    """The account's audit entries as staff read them, newest first; with `action`, only those."""
    entries = (await api.data(AUDIT, {"id": account_id}))["account"]["auditEntries"]
    return [e for e in entries if action is None or e["action"] == action]


def bare_pk(global_id: str, type_name: str) -> int:
    """The row id behind a global id (audit entries name rows by their plain id)."""
    pk = ids.decode(global_id, type_name)
    assert pk is not None, global_id
    return pk
