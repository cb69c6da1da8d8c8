"""Portico on several hosts for real (issue 15): network namespaces joined by a switch, a
database host (PostgreSQL and Redis), an API host (`portico serve`), a worker host (`portico
worker`) and a mail host (Dovecot and aiosmtpd); see tests/support/hosts.py. This test process
is a client on the same network, reaching the API host's public GraphQL API only. Each host's
loopback is its own and nothing listens there: whatever assumed 127.0.0.1 would fail here.

- The whole flow: a LOGIN toggle's invitation sent by the worker host to the mail host; mail
  appended on the mail host synced by the worker host, shown by the API host, its live event
  reaching a WebSocket subscriber on the API host through the database host's Redis, and its
  auto-saved attachment downloaded from the API host (files in the database, no shared disk).
- Readiness across hosts: the database host's cable pulled, and its PostgreSQL stopped.
- PostgreSQL's processes killed under running API and worker hosts: both work again.

It needs root (CI runs as root) and Debian's PostgreSQL, Redis and Dovecot binaries: without
them it skips, and under PORTICO_REQUIRE_SERVICES=1 it fails. It brings its own PostgreSQL
cluster, so it uses no `database` fixture and runs once, in the SQLite pass of `make test`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from datetime import UTC, datetime
from email.message import EmailMessage
from urllib.parse import urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from schema import ids
from services.shared.pubsub import firm_channel
from tests.support import hosts
from tests.support.api import Api, eventually
from tests.support.crm_ops import UPDATE_ACCOUNT
from tests.support.login import FLAGS, accept, invitee, login_on, text_of, token_in
from tests.support.mail import ANNA, Endpoint, imap_user, mail, mailbox_input
from tests.support.services import missing
from tests.support.smtp_host import received
from tests.support.websocket import SIGN_IN, SYNCED, socket

pytestmark = pytest.mark.e2e

PDF = b"%PDF-1.4\n" + b"Jahresabschluss 2025, signed\n" * 400
WAIT = 30.0  # seconds for anything that crosses hosts (a poll of the worker, an IDLE wake-up)

PROBE_SECONDS = 10.0  # a readiness probe answered later than this has failed anyway
LINK = re.compile(r"https?://\S+/invitation\?token=\S+")
CONNECT = """mutation ($input: ConnectMailboxInput!) {
  connectMailbox(input: $input) { errors { code field message } mailbox { id imapHost } } }"""
MAILBOXES = "{ mailboxes { id syncStatus lastSyncedAt lastError } }"
DELIVERIES = """query($id: ID!) { account(id: $id) { deliveries { edges { node {
  to kind status attempts lastError } } } } }"""
INBOX = """{ inbox(first: 10) { edges { node { subject from accounts { name }
  attachments { filename size document { id filename sha256 } } } } } }"""
CURRENT_ACCOUNT = "{ currentAccount { name } }"


@pytest.fixture(scope="module")
def deployment() -> Iterator[hosts.Deployment]:
    reason = hosts.unavailable()
    if reason is not None:
        missing(f"several hosts: {reason}")
    with hosts.deployment() as built:
        yield built


@pytest.fixture
def report(deployment: hosts.Deployment) -> Iterator[hosts.Deployment]:
    """The deployment; a failing test's report shows every process's output."""
    yield deployment
    print(deployment.services.report())


@pytest.fixture
async def http(report: hosts.Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=report.url, timeout=WAIT) as client:
        yield client


# The owner's device cookie, kept between sign-ins as a browser keeps it: a sign-in without it
# is from a new device, whose notice would arrive among the mail these tests count.
_DEVICE: dict[str, str] = {}


async def staff_api(http: httpx.AsyncClient) -> Api:
    """The firm's owner, signed in through the API host with the password the CLI set."""
    variables = {"f": hosts.FIRM_SLUG, "e": hosts.OWNER_EMAIL, "p": hosts.OWNER_PASSWORD}
    device = _DEVICE.get(http.base_url.host)
    headers = {"Cookie": f"portico_device={device}"} if device else {}
    response = await http.post(
        "/graphql", json={"query": SIGN_IN, "variables": variables}, headers=headers
    )
    http.cookies.clear()
    if "portico_device" in response.cookies:
        _DEVICE[http.base_url.host] = response.cookies["portico_device"]
    signed_in = response.json()["data"]
    token = signed_in["staffSignIn"]["token"]
    assert token, signed_in
    return Api(http, token)


async def arrived(deployment: hosts.Deployment, count: int) -> list[EmailMessage]:
    """The mail the mail host's SMTP server accepted, once there are `count` messages."""
    await eventually(
        lambda: len(received(deployment.smtp_folder)) >= count,
        f"{count} message(s) received by the mail host's SMTP server",
        WAIT,
    )
    return received(deployment.smtp_folder)


async def test_the_whole_flow_runs_across_hosts(
    report: hosts.Deployment, http: httpx.AsyncClient
) -> None:
    deployment = report
    api = await staff_api(http)

    # LOGIN: the API host queues the invitation; the worker host sends it to the mail host.
    anna = await invitee(api, "Miller Family", ANNA)
    turned_on = await login_on(api, anna.account_email_id)
    assert turned_on["portalStatus"] == "PENDING_ACTIVATION"
    [invitation] = await arrived(deployment, 1)
    assert invitation["To"] == ANNA
    assert invitation["X-Peer"] == deployment.net["worker"].address  # sent by the worker host
    link = LINK.search(text_of(invitation))
    assert link, text_of(invitation)
    assert urlsplit(link.group(0)).netloc == urlsplit(deployment.url).netloc  # the API host's
    sent = await api.data(DELIVERIES, {"id": anna.account_id})
    [delivery] = [e["node"] for e in sent["account"]["deliveries"]["edges"]]
    assert (delivery["to"], delivery["status"], delivery["attempts"]) == (ANNA, "SENT", 1)

    # Anna accepts it through the API host: the client now signs in there.
    accepted = await accept(Api(http), token_in(invitation))
    assert accepted["errors"] == [], accepted["errors"]
    client = Api(http, accepted["token"])
    assert (await client.data(CURRENT_ACCOUNT))["currentAccount"]["name"] == "Miller Family"

    # EMAIL SYNC: the API host checks both logins against the mail host before it saves.
    office = imap_user()
    mail_host = deployment.net["mail"].address
    values = mailbox_input(
        Endpoint(mail_host, hosts.IMAP_PORT), Endpoint(mail_host, hosts.SMTP_PORT), office
    )
    connected = (await api.data(CONNECT, {"input": values}))["connectMailbox"]
    assert connected["errors"] == [] and connected["mailbox"]["imapHost"] == mail_host
    await api.ok(UPDATE_ACCOUNT, {"id": anna.account_id, "input": {"autoSaveAttachments": True}})
    flags = {"accountEmailId": anna.account_email_id, "emailSync": True}
    await api.ok(FLAGS, {"input": flags})

    async def first_pass_done() -> bool:
        [mailbox] = (await api.data(MAILBOXES))["mailboxes"]
        assert mailbox["lastError"] is None, mailbox
        return mailbox["lastSyncedAt"] is not None

    # No process of the API host syncs (PORTICO_INPROCESS_WORKER=0): the worker host does.
    await eventually(first_pass_done, "the worker host's first pass over the mailbox", WAIT)

    firm_id = ids.decode((await api.data("{ firm { id } }"))["firm"]["id"], "Firm")
    redis = Redis.from_url(deployment.redis_url)
    try:
        async with socket(deployment.url, api.token) as live:
            await live.subscribe("1", SYNCED, {"account": anna.account_id})

            async def subscribed() -> bool:
                [(_, count)] = await redis.pubsub_numsub(firm_channel(firm_id))
                return count >= 1

            # The API host listens on the firm's channel of the database host's Redis.
            await eventually(subscribed, "the API host subscribed through Redis", WAIT)

            # Mail arrives on the mail host; the worker host syncs it (IMAP IDLE wakes it).
            raw = mail(
                ANNA,
                office,
                "Annual accounts 2025",
                body="The signed accounts are attached.",
                attachments=[("Jahresabschluss 2025.pdf", "application/pdf", PDF)],
                date=datetime.now(UTC),
            )
            await asyncio.to_thread(deployment.imap.append, office, raw)
            event = await live.event("1")
    finally:
        await redis.aclose()
    assert (event["subject"], event["from"]) == ("Annual accounts 2025", ANNA)
    assert event["accounts"] == [{"name": "Miller Family"}]

    edges = (await api.data(INBOX))["inbox"]["edges"]
    [message] = [e["node"] for e in edges]
    assert message["subject"] == "Annual accounts 2025"
    [attachment] = message["attachments"]
    document = attachment["document"]
    assert document is not None, attachment  # auto-saved into the account's Documents
    assert document["sha256"] == hashlib.sha256(PDF).hexdigest()

    # Saved by the worker host, downloaded from the API host: the content is in the database.
    for viewer in (api, client):
        got = await http.get(
            f"/documents/{document['id']}", headers={"Authorization": f"Bearer {viewer.token}"}
        )
        assert got.status_code == 200, got.text
        assert got.content == PDF
    for role, var_dir in deployment.var_dirs.items():
        files = [p for p in var_dir.rglob("*") if p.is_file() and p.read_bytes() == PDF]
        assert files == [], f"the {role} host kept the file on its disk: {files}"
    # A stranger gets nothing.
    refused = await http.get(f"/documents/{document['id']}")
    assert refused.status_code in (401, 403, 404)
    # Each host did its own part: the worker host sent and synced, the API host neither.
    worker_log, api_log = deployment.worker.log(), deployment.api.log()
    for work in ("services.loops.delivery", "services.mail.sync_engine"):
        assert work in worker_log and work not in api_log, work
    for service in deployment.services.started:
        assert "Traceback" not in service.log(), f"{service.name} logged an error"


async def test_readiness_follows_the_database_host_link(
    report: hosts.Deployment, http: httpx.AsyncClient
) -> None:
    """With the database host's cable pulled, the API host says it is not ready (503 naming
    the database) within a probe's timeout, while the process itself answers; once the cable
    is back, it is ready again and serves, without a restart."""
    deployment = report
    assert (await http.get("/readyz")).json() == {"status": "ready"}
    deployment.net.unplug("db")
    try:
        for _ in range(2):  # the probe that met the pulled cable first, and the one after it
            down = await http.get("/readyz", timeout=PROBE_SECONDS)
            assert down.status_code == 503, down.text
            assert down.json()["failed"] == "database", down.text
        assert (await http.get("/healthz", timeout=PROBE_SECONDS)).status_code == 200
    finally:
        deployment.net.plug("db")

    async def ready() -> bool:
        return (await http.get("/readyz")).status_code == 200

    await eventually(ready, "the API host ready again once the database host is back", WAIT)
    api = await staff_api(http)  # and it serves again
    assert (await api.data("{ firm { slug } }"))["firm"]["slug"] == hosts.FIRM_SLUG
    assert deployment.api.process.poll() is None and deployment.worker.alive


def restart_postgres(deployment: hosts.Deployment) -> None:
    """Starts the database host's PostgreSQL again (same cluster) and waits for its port."""
    deployment.postgres.start()
    db_host = deployment.net["db"].address
    hosts.wait_until(
        lambda: hosts.listening(db_host, hosts.PG_PORT), "PostgreSQL back", deployment.postgres
    )


async def test_readiness_names_the_database_while_its_postgresql_is_down(
    report: hosts.Deployment, http: httpx.AsyncClient
) -> None:
    """PostgreSQL on the database host stopped (the host up, its port closed): the API host
    answers 503 naming the database, not a migration."""
    deployment = report
    assert (await http.get("/readyz")).json() == {"status": "ready"}
    deployment.postgres.stop()
    try:
        down = await http.get("/readyz", timeout=PROBE_SECONDS)
        assert down.status_code == 503, down.text
        assert down.json().get("failed") == "database", down.text
    finally:
        await asyncio.to_thread(restart_postgres, deployment)


async def test_after_a_postgresql_crash_both_hosts_work_again(
    report: hosts.Deployment, http: httpx.AsyncClient
) -> None:
    """PostgreSQL's processes killed under its postmaster while the worker host's next
    statement waits on them (as the OOM killer might): PostgreSQL recovers and restarts them,
    and every connection is cut, the worker's mid-statement. Without restarting anything, the API host serves again and the
    worker host delivers mail queued afterwards (its delivery loop once stayed stuck in the
    transaction whose BEGIN had failed)."""
    deployment = report
    api = await staff_api(http)
    before = len(received(deployment.smtp_folder))
    postmaster = deployment.postgres.process.pid
    backends = hosts.children(postmaster)
    worker_host = deployment.net["worker"].address
    for pid in (postmaster, *backends):
        os.kill(pid, signal.SIGSTOP)
    try:
        # The worker polls the outbox every 0.2 s: its next BEGIN now waits unread.
        await asyncio.to_thread(
            hosts.wait_until,
            lambda: hosts.unread_statements_from(deployment.net["db"], worker_host),
            "a statement of the worker host waiting on the stopped database",
        )
        for pid in backends:
            os.kill(pid, signal.SIGKILL)
    finally:
        for pid in (postmaster, *backends):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    async def ready() -> bool:
        return (await http.get("/readyz")).status_code == 200

    await eventually(ready, "the API host ready again once PostgreSQL has recovered", WAIT)

    async def serves() -> bool:
        body = await api.post("{ firm { slug } }")  # the first may meet a cut pooled connection
        return "errors" not in body

    await eventually(serves, "the API host answering GraphQL again", WAIT)
    ben = await invitee(api, "Brown Family", "ben@brown.example", "Ben")
    await login_on(api, ben.account_email_id)
    invitations = await arrived(deployment, before + 1)
    assert invitations[-1]["To"] == "ben@brown.example"
