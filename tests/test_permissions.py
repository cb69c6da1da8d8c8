"""Who may call what, checked for every root field of the schema: a new mutation or query
without an entry here fails, so none can ship without its access rule being stated."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models import PortalAccess
from portico.settings import Settings
from resolvers.root import build_schema
from schema import ids
from services.shared import sessions
from services.shared.pubsub import firm_channel
from tests.support.api import Api, add_staff, api_for, eventually
from tests.support.login import invitee, portal_user
from tests.support.websocket import refusal, serving, socket

ID = "QWNjb3VudDox"  # an id that resolves to nothing in particular
MUTATIONS = {
    # name: (document, who may call it: "anyone", "client", "staff", "manager", "inbox", "admin")
    "staffSignIn": (
        'mutation { staffSignIn(firm: "x", email: "a@b.example", password: "p") { errors { code } } }',
        "anyone",
    ),
    "signIn": (
        'mutation { signIn(firm: "x", email: "a@b.example", password: "p") { errors { code } } }',
        "anyone",
    ),
    "acceptInvitation": ('mutation { acceptInvitation(token: "t") { errors { code } } }', "anyone"),
    "setStaffPassword": (
        'mutation { setStaffPassword(token: "t", password: "p") { errors { code } } }',
        "anyone",
    ),
    "verifySecondFactor": (
        'mutation { verifySecondFactor(challengeId: "c", code: "1") { errors { code } } }',
        "anyone",
    ),
    "startAuthenticatorEnrollment": (
        "mutation { startAuthenticatorEnrollment { errors { code } } }",
        "signed-in",
    ),
    "confirmAuthenticatorEnrollment": (
        'mutation { confirmAuthenticatorEnrollment(code: "1") { errors { code } } }',
        "signed-in",
    ),
    "removeAuthenticator": (
        'mutation { removeAuthenticator(code: "1") { errors { code } } }',
        "signed-in",
    ),
    "resetAuthenticator": (
        f'mutation {{ resetAuthenticator(personId: "{ID}") {{ errors {{ code }} }} }}',
        "admin",
    ),
    "switchAccount": (
        f'mutation {{ switchAccount(accountId: "{ID}") {{ errors {{ code }} }} }}',
        "client",
    ),
    "dismissAccountNotice": ("mutation { dismissAccountNotice }", "client"),
    "addStaffMember": (
        'mutation { addStaffMember(input: {email: "n@x.example", name: "N"}) { errors { code } } }',
        "admin",
    ),
    "updateStaffMember": (
        f'mutation {{ updateStaffMember(id: "{ID}", input: {{name: "N"}}) {{ errors {{ code }} }} }}',
        "admin",
    ),
    "createAccount": (
        'mutation { createAccount(input: {name: "A", type: FAMILY}) { errors { code } } }',
        "manager",
    ),
    "updateAccount": (
        f'mutation {{ updateAccount(id: "{ID}", input: {{name: "B"}}) {{ errors {{ code }} }} }}',
        "manager",
    ),
    "createContact": (
        'mutation { createContact(input: {firstName: "A", lastName: "B"}) { errors { code } } }',
        "manager",
    ),
    "linkContact": (
        f'mutation {{ linkContact(accountId: "{ID}", contactId: "{ID}") {{ errors {{ code }} }} }}',
        "manager",
    ),
    "unlinkContact": (
        f'mutation {{ unlinkContact(accountId: "{ID}", contactId: "{ID}") {{ errors {{ code }} }} }}',
        "manager",
    ),
    "addEmailAddress": (
        f'mutation {{ addEmailAddress(contactId: "{ID}", email: {{address: "a@b.example"}}) {{ errors {{ code }} }} }}',
        "manager",
    ),
    "updateEmailAddress": (
        f'mutation {{ updateEmailAddress(id: "{ID}", address: "a@b.example") {{ errors {{ code }} }} }}',
        "manager",
    ),
    "removeEmailAddress": (
        f'mutation {{ removeEmailAddress(id: "{ID}") {{ errors {{ code }} }} }}',
        "manager",
    ),
    "importContacts": (
        'mutation { importContacts(csv: "first_name,last_name,email") { errors { code } } }',
        "manager",
    ),
    "setEmailFlags": (
        f'mutation {{ setEmailFlags(input: {{accountEmailId: "{ID}", notify: true}}) {{ errors {{ code }} }} }}',
        "manager",
    ),
    "resendInvitation": (
        f'mutation {{ resendInvitation(accountEmailId: "{ID}") {{ errors {{ code }} }} }}',
        "manager",
    ),
    "removePortalAccess": (
        f'mutation {{ removePortalAccess(portalAccessId: "{ID}") {{ errors {{ code }} }} }}',
        "manager",
    ),
    "sendFirmEmail": (
        f'mutation {{ sendFirmEmail(input: {{accountIds: ["{ID}"], subject: "S", body: "B"}}) {{ errors {{ code }} }} }}',
        "staff",
    ),
    "notifyClientEvent": (
        f'mutation {{ notifyClientEvent(input: {{accountId: "{ID}", category: APPROVALS, title: "T"}}) {{ errors {{ code }} }} }}',
        "staff",
    ),
    "updateFirmSettings": (
        'mutation { updateFirmSettings(input: {copyAddress: ""}) { errors { code } } }',
        "admin",
    ),
    "uploadDocument": (
        f'mutation {{ uploadDocument(accountId: "{ID}", file: "not-a-file") {{ errors {{ code }} }} }}',
        "staff",
    ),
    "signOut": ("mutation { signOut }", "anyone"),
    "connectMailbox": (
        'mutation { connectMailbox(input: {address: "m@acme.example", imapHost: "127.0.0.1", imapPort: 1, smtpHost: "127.0.0.1", smtpPort: 1, username: "m", password: "p"}) { errors { code } } }',
        "inbox",
    ),
    "syncMailbox": (f'mutation {{ syncMailbox(id: "{ID}") {{ errors {{ code }} }} }}', "inbox"),
    "replyToMessage": (
        f'mutation {{ replyToMessage(messageId: "{ID}", body: "Thanks") {{ errors {{ code }} }} }}',
        "inbox",
    ),
    "shareThread": ('mutation { shareThread(threadId: "t") { errors { code } } }', "inbox"),
    "unshareThread": ('mutation { unshareThread(threadId: "t") { errors { code } } }', "inbox"),
    "updateContact": (
        f'mutation {{ updateContact(id: "{ID}", input: {{firstName: "X"}}) {{ errors {{ code }} }} }}',
        "manager",
    ),
    "deleteContact": (
        f'mutation {{ deleteContact(id: "{ID}") {{ errors {{ code }} }} }}',
        "manager",
    ),
    "archiveAccount": (
        f'mutation {{ archiveAccount(id: "{ID}") {{ errors {{ code }} }} }}',
        "manager",
    ),
    "unarchiveAccount": (
        f'mutation {{ unarchiveAccount(id: "{ID}") {{ errors {{ code }} }} }}',
        "manager",
    ),
    "deleteAccount": (f'mutation {{ deleteAccount(id: "{ID}") {{ errors {{ code }} }} }}', "admin"),
    "deleteDocument": (
        f'mutation {{ deleteDocument(id: "{ID}") {{ errors {{ code }} }} }}',
        "manager",
    ),
    "exportContactData": (
        f'mutation {{ exportContactData(id: "{ID}") {{ errors {{ code }} }} }}',
        "manager",
    ),
    "eraseContact": (f'mutation {{ eraseContact(id: "{ID}") {{ errors {{ code }} }} }}', "manager"),
    "setInboxNotification": (
        "mutation { setInboxNotification(setting: IMMEDIATE) { errors { code } } }",
        "staff",
    ),
    "updateMailbox": (
        f'mutation {{ updateMailbox(id: "{ID}", input: {{password: "p"}}) {{ errors {{ code }} }} }}',
        "inbox",
    ),
    "disconnectMailbox": (
        f'mutation {{ disconnectMailbox(id: "{ID}") {{ errors {{ code }} }} }}',
        "inbox",
    ),
    "createWebhookEndpoint": (
        'mutation { createWebhookEndpoint(input: {url: "ftp://x", events: [INVITATION_SENT]}) { errors { code } } }',
        "admin",
    ),
    "updateWebhookEndpoint": (
        f'mutation {{ updateWebhookEndpoint(id: "{ID}", input: {{url: "ftp://x", events: [INVITATION_SENT]}}) {{ errors {{ code }} }} }}',
        "admin",
    ),
    "deleteWebhookEndpoint": (
        f'mutation {{ deleteWebhookEndpoint(id: "{ID}") {{ errors {{ code }} }} }}',
        "admin",
    ),
    "rotateWebhookSecret": (
        f'mutation {{ rotateWebhookSecret(id: "{ID}") {{ errors {{ code }} }} }}',
        "admin",
    ),
    "redeliverWebhook": (
        f'mutation {{ redeliverWebhook(deliveryId: "{ID}") {{ errors {{ code }} }} }}',
        "admin",
    ),
    "setNotificationPreferences": (
        f'mutation {{ setNotificationPreferences(input: {{accountEmailId: "{ID}", all: true}}) {{ errors {{ code }} }} }}',
        "manager-or-client",
    ),
}
QUERIES = {
    "node": (f'{{ node(id: "{ID}") {{ id }} }}', "anyone"),
    "viewer": ("{ viewer { __typename } }", "anyone"),
    "firm": ("{ firm { id } }", "anyone"),
    "portalAccounts": ("{ portalAccounts { id } }", "client"),
    "currentAccount": ("{ currentAccount { id } }", "client"),
    "accountNotice": ("{ accountNotice }", "client"),
    "account": (f'{{ account(id: "{ID}") {{ id }} }}', "signed-in"),
    "staffMembers": ("{ staffMembers { id } }", "staff"),
    "staffMembersPage": ("{ staffMembersPage { totalCount } }", "staff"),
    "accounts": ("{ accounts { totalCount } }", "staff"),
    "contacts": ("{ contacts { totalCount } }", "staff"),
    "contact": (f'{{ contact(id: "{ID}") {{ id }} }}', "staff"),
    "mailboxes": ("{ mailboxes { id } }", "inbox"),
    "inbox": ("{ inbox { totalCount } }", "inbox"),
    "webhookEndpoints": ("{ webhookEndpoints { id } }", "admin"),
}
SUBSCRIPTIONS = {
    "messageSynced": ("subscription { messageSynced { id } }", "inbox"),
}
ACCOUNT_FIELDS = {
    # Fields of an account with a rule stricter than seeing the account: {id} is its id.
    "messages": ("query($id: ID!) { account(id: $id) { messages { totalCount } } }", "inbox"),
    "auditEntriesPage": (
        "query($id: ID!) { account(id: $id) { auditEntriesPage { totalCount } } }",
        "staff",
    ),
    "invitationsPage": (
        "query($id: ID!) { account(id: $id) { invitationsPage { totalCount } } }",
        "staff",
    ),
}
ALLOWED = {
    # rule: the viewers it lets through
    "anyone": {"anonymous", "client", "reader", "manager", "inbox", "admin"},
    "signed-in": {"client", "reader", "manager", "inbox", "admin"},
    "client": {"client"},
    "staff": {"reader", "manager", "inbox", "admin"},
    "manager-or-client": {"client", "manager", "admin"},
    "manager": {"manager", "admin"},
    "inbox": {"inbox", "admin"},  # owners, admins and the inbox right
    "admin": {"admin"},
}


def test_every_root_field_has_a_stated_rule():
    schema = build_schema(Settings(_env_file=None))._schema
    assert set(schema.mutation_type.fields) == set(MUTATIONS)
    assert set(schema.query_type.fields) == set(QUERIES)
    assert set(schema.subscription_type.fields) == set(SUBSCRIPTIONS)


async def _viewers(acme, client) -> dict[str, Api]:
    """One API client per kind of viewer, the client with access to one account."""
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    user = await portal_user(acme.owner.firm_id)
    account_id = ids.decode(anna.account_id, "Account")
    await PortalAccess.create(firm_id=acme.owner.firm_id, account_id=account_id, portal_user=user)
    client_token, _ = await sessions.start_client_session(user, timedelta(hours=1), None)
    return {
        "anonymous": Api(client),
        "client": Api(client, client_token),
        "reader": await api_for(client, await add_staff(acme, "reader@acme.example")),
        "manager": await api_for(
            client, await add_staff(acme, "m@acme.example", can_manage_accounts=True)
        ),
        "inbox": await api_for(client, await add_staff(acme, "i@acme.example", can_use_inbox=True)),
        "admin": acme.api,
    }


def _refused(body: dict) -> str | None:
    codes = [e.get("extensions", {}).get("code") for e in body.get("errors", [])]
    return next((c for c in codes if c in ("UNAUTHENTICATED", "FORBIDDEN")), None)


@pytest.mark.parametrize("kind", ["query", "mutation"])
async def test_each_viewer_gets_exactly_what_the_rule_allows(acme, client, kind):
    viewers = await _viewers(acme, client)
    table = QUERIES if kind == "query" else MUTATIONS
    # signOut last: it ends each viewer's session.
    for name, (document, rule) in sorted(table.items(), key=lambda item: item[0] == "signOut"):
        for who, api in viewers.items():
            body = await api.post(document)
            refused = _refused(body)
            if who in ALLOWED[rule]:
                assert refused is None, (name, who, body)
            else:
                expected = "UNAUTHENTICATED" if who == "anonymous" else "FORBIDDEN"
                assert refused == expected, (name, who, body)


async def test_account_fields_with_a_rule_of_their_own(acme, client):
    viewers = await _viewers(acme, client)
    [account] = (await viewers["client"].data("{ portalAccounts { id } }"))["portalAccounts"]
    for name, (document, rule) in ACCOUNT_FIELDS.items():
        for who, api in viewers.items():
            refused = _refused(await api.post(document, {"id": account["id"]}))
            if who in ALLOWED[rule]:
                assert refused is None, (name, who)
            else:
                expected = "UNAUTHENTICATED" if who == "anonymous" else "FORBIDDEN"
                assert refused == expected, (name, who)


async def test_each_viewer_may_subscribe_exactly_as_the_rule_allows(acme, client, settings):
    viewers = await _viewers(acme, client)
    channel = firm_channel(acme.owner.firm_id)
    async with serving(settings) as live:
        bus = live.app.state.bus
        for name, (document, rule) in SUBSCRIPTIONS.items():
            for who, api in viewers.items():
                async with socket(live.url, api.token) as sock:
                    if who in ALLOWED[rule]:
                        await sock.subscribe("1", document)
                        await eventually(lambda: bus.subscriber_count(channel) == 1)
                        await sock.nothing_pending()  # listening, no error
                    else:
                        expected = "UNAUTHENTICATED" if who == "anonymous" else "FORBIDDEN"
                        error = await refusal(sock, document=document)
                        assert error["extensions"]["code"] == expected, (name, who, error)
                await eventually(lambda: bus.subscriber_count(channel) == 0)
