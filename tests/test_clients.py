"""Stock GraphQL clients against a real `portico serve`: Apollo Client, urql, graphql-request,
graphql-ws, graphql-codegen and graphql-http's audits (Node scripts in tests/clients/), and
Python's gql over HTTP and both WebSocket protocols. docs/clients.md shows these files; a test
here keeps each of its snippets verbatim in the file it names.

The server runs on the run's backend (a fresh PostgreSQL database in the PostgreSQL run) with
its demo firm. The only subscription, messageSynced, is raised by a mailbox sync: while a
client waits for its event, the test keeps putting mail into a Dovecot mailbox of the demo
firm and asking for a sync (the server does not say when a subscription is live).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import websockets
from gql.transport.exceptions import TransportConnectionFailed, TransportServerError

from tests.support import server
from tests.support.api import Api
from tests.support.databases import Database, create_postgres_database, drop_postgres_database
from tests.support.imap import ImapServer, imap_fixture  # noqa: F401  (the `imap` fixture)
from tests.support.mail import CONNECT, imap_user, mail, mailbox_input
from tests.support.server import DEMO_FIRM, DEMO_OWNER_EMAIL, DEMO_PASSWORD, LiveServer
from tests.support.services import missing
from tests.support.smtp import SmtpServer, smtp_fixture  # noqa: F401  (the `smtp` fixture)
from tests.support.websocket import LEGACY_WS, SIGN_IN, SYNC, TRANSPORT_WS

pytestmark = pytest.mark.e2e

CLIENTS = Path(__file__).parent / "clients"
DOCS = Path(__file__).parent.parent / "docs" / "clients.md"
SCRIPT_TIMEOUT = 120.0
FEED_SUBJECT = "Client check"


def load_gql() -> ModuleType:
    """tests/clients/portico_gql.py (a file the docs show, not a package module)."""
    spec = importlib.util.spec_from_file_location("portico_gql", CLIENTS / "portico_gql.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def node() -> str:
    """node, with tests/clients' packages installed; module-scoped so a missing one skips
    before the server starts."""
    path = shutil.which("node")
    if path is None:
        missing("node not found (apt-get install nodejs npm)")
    if not (CLIENTS / "node_modules" / ".installed").exists():
        missing("tests/clients/node_modules is not installed: run make install")
    return str(path)


@pytest.fixture(scope="module")
async def live(
    database: Database, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveServer]:
    """`portico serve` with the demo firm, on the run's backend (its own database)."""
    folder = tmp_path_factory.mktemp("portico-clients")
    if database.backend == "sqlite":
        started = await asyncio.to_thread(server.start_server, folder)
        yield started
        started.stop()
        return
    name, url = await create_postgres_database()
    try:
        started = await asyncio.to_thread(
            server.start_server, folder, {"PORTICO_DATABASE_URL": url}
        )
        yield started
        started.stop()
    finally:
        await drop_postgres_database(name)


@pytest.fixture
async def http(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url) as client:
        yield client


@pytest.fixture
async def token(http: httpx.AsyncClient) -> str:
    variables = {"f": DEMO_FIRM, "e": DEMO_OWNER_EMAIL, "p": DEMO_PASSWORD}
    response = await http.post("/graphql", json={"query": SIGN_IN, "variables": variables})
    return response.json()["data"]["staffSignIn"]["token"]


@contextlib.asynccontextmanager
async def new_mail(
    http: httpx.AsyncClient, token: str, imap: ImapServer, smtp: SmtpServer
) -> AsyncIterator[list[str]]:
    """While the block runs, a message for the demo's synced address arrives every second in
    a mailbox of the demo firm and is synced; yields the subjects sent so far."""
    api = Api(http, token)
    user = imap_user(domain="demo.example")
    payload = await api.ok(CONNECT, {"input": mailbox_input(imap, smtp, user)})
    mailbox_id = payload["mailbox"]["id"]
    subjects: list[str] = []

    async def feed() -> None:
        while True:
            subject = f"{FEED_SUBJECT} {len(subjects)}"
            subjects.append(subject)
            await asyncio.to_thread(imap.append, user, mail(subject=subject))
            await api.data(SYNC, {"id": mailbox_id})
            await asyncio.sleep(1)

    task = asyncio.create_task(feed())
    try:
        yield subjects
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_node(node: str, script: str, live: LiveServer, **env: str) -> str:
    """Runs tests/clients/`script` against the server; its stdout, failing with its output
    unless it exits 0."""
    environ = {**os.environ, "PORTICO_URL": live.url, **env}
    process = await asyncio.create_subprocess_exec(
        node,
        script,
        cwd=CLIENTS,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(SCRIPT_TIMEOUT):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{script} did not finish within {SCRIPT_TIMEOUT:g} s")
    if process.returncode != 0:
        pytest.fail(f"{script} exited {process.returncode}:\n{err.decode()}\n{out.decode()}")
    return out.decode()


def event_of(output: str) -> dict:
    """The messageSynced event a script printed as `EVENT {json}`."""
    [line] = [line for line in output.splitlines() if line.startswith("EVENT ")]
    return json.loads(line.removeprefix("EVENT "))


def assert_fed(event: dict, subjects: list[str]) -> None:
    assert event["subject"] in subjects, event
    # The demo's account with EMAIL SYNC on (Apollo adds __typename to every object).
    assert [account["name"] for account in event["accounts"]] == ["Miller Family"], event


# Node clients ---------------------------------------------------------------------------------


async def test_apollo_client(node, live, http, token, imap, smtp):
    async with new_mail(http, token, imap, smtp) as subjects:
        output = await run_node(
            node,
            "apollo.mjs",
            live,
            PORTICO_FIRM=DEMO_FIRM,
            PORTICO_EMAIL=DEMO_OWNER_EMAIL,
            PORTICO_PASSWORD=DEMO_PASSWORD,
        )
    assert "apollo: ok" in output
    assert_fed(event_of(output), subjects)


async def test_urql(node, live, http, token, imap, smtp):
    async with new_mail(http, token, imap, smtp) as subjects:
        output = await run_node(node, "urql.mjs", live, PORTICO_TOKEN=token)
    assert "urql: ok" in output
    assert_fed(event_of(output), subjects)


async def test_graphql_request(node, live, token):
    output = await run_node(node, "graphql-request.mjs", live, PORTICO_TOKEN=token)
    assert "graphql-request: ok" in output


async def test_graphql_ws_reads_the_token_and_refuses_a_bad_one(node, live, token):
    output = await run_node(node, "graphql-ws.mjs", live, PORTICO_TOKEN=token)
    assert "graphql-ws: ok" in output


async def test_graphql_http_audits_pass_every_must(node, live):
    output = await run_node(node, "audit.mjs", live)
    print(output)  # the SHOULDs that failed, if any (pytest -rP shows them)
    assert re.search(r"audit: \d+ of \d+ passed", output), output


async def test_codegen_with_the_scalars_config_typechecks(node, tmp_path):
    # The committed schema (no server needed) and the documented config; tsc checks that
    # DateTime came out as a string and AccountType as its values.
    for command in ("graphql-codegen --config codegen.ts", "tsc -p ."):
        binary, *args = command.split()
        process = await asyncio.create_subprocess_exec(
            str(CLIENTS / "node_modules" / ".bin" / binary),
            *args,
            cwd=CLIENTS,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        assert process.returncode == 0, f"{command}:\n{out.decode()}"


# Python's gql -----------------------------------------------------------------------------------


async def test_gql_query_over_http(live, token):
    result = await load_gql().accounts(live.url, token)
    assert result["accounts"]["totalCount"] >= 3, result  # the demo's accounts


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_gql_query_over_both_websocket_protocols(protocol, live, token):
    result = await load_gql().viewer(live.url, token, protocol)
    assert result == {"viewer": {"__typename": "StaffMember", "email": DEMO_OWNER_EMAIL}}


async def test_gql_sees_a_bad_token_refused_at_connect(live):
    gql_client = load_gql()
    # graphql-transport-ws: closed with 4403 before any ack.
    with pytest.raises(TransportConnectionFailed) as failed:
        await gql_client.viewer(live.url, "not-a-session", TRANSPORT_WS)
    closed = failed.value.__cause__
    assert isinstance(closed, websockets.ConnectionClosed), repr(closed)
    assert closed.rcvd is not None and closed.rcvd.code == 4403, closed
    # graphql-ws (legacy): connection_error, which gql raises with its payload.
    with pytest.raises(TransportServerError, match="UNAUTHENTICATED"):
        await gql_client.viewer(live.url, "not-a-session", LEGACY_WS)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_gql_subscription_over_both_websocket_protocols(
    protocol, live, http, token, imap, smtp
):
    gql_client = load_gql()
    async with new_mail(http, token, imap, smtp) as subjects:
        async with asyncio.timeout(60):
            event = await gql_client.first_synced_message(live.url, token, protocol)
    assert_fed(event, subjects)


# docs/clients.md ------------------------------------------------------------------------------

SNIPPET = re.compile(r"```\w+ (tests/clients/\S+)\n(.*?)```", re.DOTALL)
RUN_HERE = {
    "apollo.mjs",
    "urql.mjs",
    "graphql-request.mjs",
    "graphql-ws.mjs",
    "audit.mjs",
    "codegen.ts",
    "portico_gql.py",
}


def snippets() -> Iterator[tuple[str, str]]:
    yield from SNIPPET.findall(DOCS.read_text())


def test_every_snippet_in_the_docs_is_in_a_file_these_tests_run():
    found = list(snippets())
    assert {Path(path).name for path, _ in found} == RUN_HERE
    for path, block in found:
        source = (CLIENTS.parent.parent / path).read_text()
        assert block in source, f"docs/clients.md's block for {path} is not in that file"
