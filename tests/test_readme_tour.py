"""README's GraphiQL tour, block by block, against the demo firm: it works as written."""

from __future__ import annotations

import re
from pathlib import Path

from portico.settings import Settings
from schema import ids
from services.firm import demo

README = Path(__file__).resolve().parent.parent / "README.md"


def tour_blocks() -> list[str]:
    return re.findall(r"```graphql\n(.*?)```", README.read_text(), re.S)


async def test_readme_tour_runs_in_order_with_the_cookie(client):
    await demo.seed_demo()
    blocks = tour_blocks()
    assert len(blocks) >= 5
    answers = []
    for block in blocks:
        first_account = answers[1]["accounts"]["edges"][0]["node"] if len(answers) > 1 else {}
        if "ACCOUNT_EMAIL_ID" in block:
            block = block.replace("ACCOUNT_EMAIL_ID", first_account["emails"][0]["id"])
        if "ACCOUNT_ID" in block:
            block = block.replace("ACCOUNT_ID", first_account["id"])
        if "CONTACT_ID" in block:
            block = block.replace("CONTACT_ID", answers[2]["createContact"]["contact"]["id"])
        if "MAILBOX_ID" in block:  # the demo firm has none: any mailbox id is not found
            block = block.replace("MAILBOX_ID", ids.encode("Mailbox", 1))
        # Like GraphiQL in a browser: the session cookie from sign-in rides along.
        response = await client.post("/graphql", json={"query": block})
        body = response.json()
        assert "errors" not in body, (block, body)
        answers.append(body["data"])

    signed_in, accounts, contact, bad, fixed, search, imported = answers[:7]
    assert signed_in["staffSignIn"]["viewer"] == {"name": "Olivia Owner", "role": "OWNER"}
    assert accounts["accounts"]["totalCount"] == len(demo.ACCOUNTS)
    assert contact["createContact"]["errors"] == []
    assert bad["createAccount"]["errors"][0]["code"] == "INVALID_NAME"
    assert fixed["updateContact"] == {
        "errors": [],
        "contact": {"firstName": "Christopher", "lastName": "Miller"},
    }
    assert search["contacts"]["totalCount"] == 3  # Anna, Ben and the new Chris Miller
    assert imported["importContacts"] == {
        "errors": [],
        "created": 1,
        "updated": 0,
        "rejectedRows": [],
    }
    flags, trail = answers[7:9]
    row = flags["setEmailFlags"]["accountEmail"]
    assert row["login"] and row["portalStatus"] == "PENDING_ACTIVATION"
    assert row["latestInvitation"]["status"] == "PENDING"
    [edge] = trail["accounts"]["edges"]
    assert [e["action"] for e in edge["node"]["auditEntries"]][:2] == [
        "INVITATION_SENT",
        "FLAGS_CHANGED",
    ]
    assert edge["node"]["deliveries"]["edges"][0]["node"]["kind"] == "INVITATION"
    # NOTIFY went on with LOGIN above: the pending address receives the notification.
    assert answers[9]["notifyClientEvent"] == {"errors": [], "queued": 1}
    # The demo firm has no mailbox yet: Inbox+ is empty, not an error.
    assert answers[10] == {"mailboxes": [], "inbox": {"totalCount": 0, "edges": []}}
    [not_found] = answers[11]["updateMailbox"]["errors"]
    assert not_found["code"] == "NOT_FOUND" and answers[11]["updateMailbox"]["mailbox"] is None
    hook, toggled, hooks = answers[12:15]
    assert hook["createWebhookEndpoint"]["errors"] == []
    assert hook["createWebhookEndpoint"]["secret"].startswith("whsec_")
    assert toggled["setEmailFlags"]["errors"] == []
    [endpoint] = hooks["webhookEndpoints"]
    [delivery] = [e["node"] for e in endpoint["deliveries"]["edges"]]
    assert (delivery["event"], delivery["status"]) == ("EMAIL_FLAGS_CHANGED", "PENDING")
    assert delivery["eventId"].startswith("msg_") and delivery["attemptLog"] == []
    # No mailbox, no thread: sharing one is not found (and nothing is shared).
    assert answers[15]["shareThread"] == {
        "errors": [{"code": "NOT_FOUND", "field": ["threadId"], "message": "No such thread."}],
        "threadId": None,
        "private": None,
    }
    two_factor = answers[16]
    assert two_factor["updateFirmSettings"]["firm"] == {
        "clientSecondFactor": "EMAIL_CODE",
        "staffSecondFactor": "AUTHENTICATOR",
        "secondFactorFrom": "2027-01-01T00:00:00+00:00",
    }
    enrollment = two_factor["startAuthenticatorEnrollment"]
    assert enrollment["provisioningUri"].startswith("otpauth://totp/Demo")
    assert enrollment["qrCodeSvg"].startswith("<svg")


def test_every_setting_is_in_the_readme():
    """README's settings table is the operator's only list: each PORTICO_ variable is in it."""
    readme = README.read_text()
    missing = [name for name in Settings.model_fields if f"PORTICO_{name.upper()}" not in readme]
    assert missing == []
