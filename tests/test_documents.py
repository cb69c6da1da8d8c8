"""Documents: multipart upload, storage by content hash, listing, guarded download."""

from __future__ import annotations

import hashlib
import json

import httpx

from models import Document
from resolvers.context import SESSION_COOKIE
from tests.support.api import Api, add_staff, api_for
from tests.support.login import FLAGS, accept, deliver, invitee, login_on, token_in
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)

UPLOAD = """mutation($a: ID!, $f: Upload!) { uploadDocument(accountId: $a, file: $f) {
  errors { code message } document { id filename contentType size sha256 downloadUrl } } }"""
LIST = "query($id: ID!) { account(id: $id) { documents { totalCount edges { node { id filename } } } } }"
PDF = b"%PDF-1.4\n" + b"portico test document\n" * 100


async def upload(
    http: httpx.AsyncClient,
    token: str | None,
    account_id: str,
    name: str,
    content: bytes,
    **headers: str,
) -> httpx.Response:
    operations = {"query": UPLOAD, "variables": {"a": account_id, "f": None}}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return await http.post(
        "/graphql",
        data={"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.f"]})},
        files={"0": (name, content, "application/octet-stream")},
        headers=headers,
    )


async def upload_raw(
    http: httpx.AsyncClient, token: str, account_id: str, name: str, content: bytes
) -> httpx.Response:
    """An upload whose part names the file exactly as given (UTF-8, control characters too):
    httpx would percent-encode some of them."""
    operations = json.dumps({"query": UPLOAD, "variables": {"a": account_id, "f": None}})
    parts = [
        ("operations", None, operations.encode()),
        ("map", None, b'{"0": ["variables.f"]}'),
        ("0", name, content),
    ]
    body = b""
    for field, filename, value in parts:
        disposition = f'form-data; name="{field}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += b"--BOUNDARY\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n"
        body += value + b"\r\n"
    body += b"--BOUNDARY--\r\n"
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "multipart/form-data; boundary=BOUNDARY",
    }
    return await http.post("/graphql", content=body, headers=headers)


async def test_upload_list_notify_and_download(acme, client, settings, smtp):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    await acme.api.ok(FLAGS, {"input": {"accountEmailId": anna.account_email_id, "notify": True}})
    response = await upload(client, acme.api.token, anna.account_id, "Return 2025.pdf", PDF)
    payload = response.json()["data"]["uploadDocument"]
    assert payload["errors"] == []
    document = payload["document"]
    assert (document["filename"], document["contentType"], document["size"]) == (
        "Return 2025.pdf",
        "application/pdf",
        len(PDF),
    )
    assert document["sha256"] == hashlib.sha256(PDF).hexdigest()
    stored = settings.resolved_files_dir / document["sha256"][:2] / document["sha256"]
    assert stored.read_bytes() == PDF
    listed = (await acme.api.data(LIST, {"id": anna.account_id}))["account"]["documents"]
    assert listed["totalCount"] == 1 and listed["edges"][0]["node"]["id"] == document["id"]

    [mail] = await deliver(settings, smtp)
    assert mail["To"] == "anna@miller.example" and "Return 2025.pdf" in mail["Subject"]

    path = "/documents/" + document["id"]
    assert document["downloadUrl"].endswith(path)
    got = await client.get(path, headers={"Authorization": f"Bearer {acme.api.token}"})
    assert got.status_code == 200 and got.content == PDF
    assert got.headers["content-type"].startswith("application/pdf")
    assert "attachment" in got.headers["content-disposition"]
    assert (await client.get(path)).status_code == 404

    # The same content again is stored once; both rows point at it.
    again = (await upload(client, acme.api.token, anna.account_id, "copy.pdf", PDF)).json()
    assert again["data"]["uploadDocument"]["document"]["sha256"] == document["sha256"]
    assert len(list(settings.resolved_files_dir.glob("??/*"))) == 1


async def test_download_is_for_the_firm_and_the_accounts_clients_only(
    acme, globex, client, settings, smtp
):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    other = await invitee(acme.api, "Other Family", "ben@other.example", first="Ben")
    document = (await upload(client, acme.api.token, anna.account_id, "a.pdf", PDF)).json()
    path = "/documents/" + document["data"]["uploadDocument"]["document"]["id"]
    assert (
        await client.get(path, headers={"Authorization": f"Bearer {globex.api.token}"})
    ).status_code == 404

    await login_on(acme.api, anna.account_email_id)
    await login_on(acme.api, other.account_email_id)
    anna_mail, ben_mail = await deliver(settings, smtp)
    anna_token = (await accept(Api(client), token_in(anna_mail)))["token"]
    ben_token = (await accept(Api(client), token_in(ben_mail)))["token"]
    client.cookies.set(SESSION_COOKIE, anna_token)
    assert (await client.get(path)).status_code == 200  # the browser's cookie works too
    client.cookies.clear()
    assert (
        await client.get(path, headers={"Authorization": f"Bearer {ben_token}"})
    ).status_code == 404
    # Clients see the documents of the account they are in.
    listed = await Api(client, anna_token).data("{ currentAccount { documents { totalCount } } }")
    assert listed == {"currentAccount": {"documents": {"totalCount": 1}}}
    body = (await upload(client, anna_token, anna.account_id, "mine.pdf", PDF)).json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_refused_uploads_leave_nothing_behind(acme, client, settings):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    settings.max_upload_bytes = 1000  # the app shares this settings object
    big = await upload(client, acme.api.token, anna.account_id, "big.pdf", PDF)
    assert big.json()["data"]["uploadDocument"]["errors"][0]["code"] == "TOO_LARGE"
    exe = await upload(client, acme.api.token, anna.account_id, "tool.exe", b"MZ...")
    assert exe.json()["data"]["uploadDocument"]["errors"][0]["code"] == "UNSUPPORTED_TYPE"
    files = (
        [p for p in settings.resolved_files_dir.rglob("*") if p.is_file()]
        if settings.resolved_files_dir.exists()
        else []
    )
    assert files == []
    assert await Document.all().count() == 0


async def test_uploads_need_a_header_a_cross_site_form_cannot_send(acme, client):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    client.cookies.set(SESSION_COOKIE, acme.api.token)
    refused = await upload(client, None, anna.account_id, "a.pdf", PDF)
    assert refused.status_code == 400
    allowed = await upload(
        client, None, anna.account_id, "a.pdf", PDF, **{"GraphQL-Require-Preflight": "1"}
    )
    client.cookies.clear()
    assert allowed.json()["data"]["uploadDocument"]["errors"] == []


async def test_a_file_sent_as_a_plain_value_is_a_clear_error(acme):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    data = await acme.api.data(UPLOAD, {"a": anna.account_id, "f": "not a file"})
    assert data["uploadDocument"]["errors"][0]["code"] == "INVALID_FILE"


async def test_file_names_lose_bidirectional_and_other_control_characters(acme, client):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    # U+202E would show "Invoice\u202efdp.exe" as "Invoiceexe.pdf": the override goes.
    names = {
        "Invoice\u202efdp.pdf": "Invoicefdp.pdf",
        "\u2066Re\u200fturn\u061c 20\u202a25\u202c\u2069.pdf": "Return 2025.pdf",
        "Sc\x07an\x7f\x85.pdf": "Scan.pdf",
    }
    for sent, stored in names.items():
        body = (await upload_raw(client, acme.api.token, anna.account_id, sent, PDF)).json()
        assert body["data"]["uploadDocument"]["errors"] == [], sent
        assert body["data"]["uploadDocument"]["document"]["filename"] == stored
    listed = (await acme.api.data(LIST, {"id": anna.account_id}))["account"]["documents"]
    assert sorted(e["node"]["filename"] for e in listed["edges"]) == sorted(names.values())


async def test_a_file_name_of_control_characters_only_is_refused(acme, client, settings):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    nothing_left = "\u202e\u2066\x01\u200e"
    body = (await upload_raw(client, acme.api.token, anna.account_id, nothing_left, PDF)).json()
    assert body["data"]["uploadDocument"]["errors"][0]["code"] == "INVALID_FILENAME"
    assert body["data"]["uploadDocument"]["document"] is None
    assert await Document.all().count() == 0
    assert not list(settings.resolved_files_dir.glob("??/*"))


DELETE = """mutation($id: ID!) { deleteDocument(id: $id) {
  errors { code field message } document { id filename } } }"""
AUDIT = "query($id: ID!) { account(id: $id) { auditEntries { action actor before } } }"


async def test_deleting_a_document_ends_its_download_and_forgets_unused_content(
    acme, client, settings, smtp
):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    first = (await upload(client, acme.api.token, anna.account_id, "a.pdf", PDF)).json()
    second = (await upload(client, acme.api.token, anna.account_id, "b.pdf", PDF)).json()
    first, second = (p["data"]["uploadDocument"]["document"] for p in (first, second))
    await login_on(acme.api, anna.account_email_id)
    [mail] = await deliver(settings, smtp)
    client_token = (await accept(Api(client), token_in(mail)))["token"]
    as_client = {"Authorization": f"Bearer {client_token}"}
    assert (await client.get("/documents/" + first["id"], headers=as_client)).status_code == 200
    stored = settings.resolved_files_dir / first["sha256"][:2] / first["sha256"]

    deleted = await acme.api.ok(DELETE, {"id": first["id"]})
    assert deleted["document"] == {"id": first["id"], "filename": "a.pdf"}
    assert (await client.get("/documents/" + first["id"], headers=as_client)).status_code == 404
    assert stored.is_file()  # the other document holds the same content
    listed = (await acme.api.data(LIST, {"id": anna.account_id}))["account"]["documents"]
    assert [e["node"]["id"] for e in listed["edges"]] == [second["id"]]

    await acme.api.ok(DELETE, {"id": second["id"]})
    assert not stored.exists()  # nothing refers to it any more
    again = (await acme.api.data(DELETE, {"id": second["id"]}))["deleteDocument"]
    assert again["errors"][0]["code"] == "NOT_FOUND" and again["document"] is None
    entries = (await acme.api.data(AUDIT, {"id": anna.account_id}))["account"]["auditEntries"]
    deletions = [e for e in entries if e["action"] == "DOCUMENT_DELETED"]
    assert sorted(e["before"]["filename"] for e in deletions) == ["a.pdf", "b.pdf"]
    assert {e["actor"] for e in deletions} == {"owner@acme.example"}


async def test_deleting_a_document_is_for_staff_who_manage_accounts_of_its_firm(
    acme, globex, client, settings
):
    anna = await invitee(acme.api, "Miller Family", "anna@miller.example")
    body = (await upload(client, acme.api.token, anna.account_id, "a.pdf", PDF)).json()
    document = body["data"]["uploadDocument"]["document"]
    refused = (await globex.api.data(DELETE, {"id": document["id"]}))["deleteDocument"]
    assert [(e["code"], e["field"]) for e in refused["errors"]] == [("NOT_FOUND", ["id"])]
    clerk = await api_for(client, await add_staff(acme, "clerk@acme.example"))
    forbidden = await clerk.post(DELETE, {"id": document["id"]})
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert await Document.all().count() == 1
    assert (settings.resolved_files_dir / document["sha256"][:2] / document["sha256"]).is_file()
