"""importContacts over the API, and `portico import-contacts` as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from portico.settings import Settings
from tests.support.api import PASSWORD, Api, Firm, add_staff, api_for

IMPORT = """
mutation ($csv: String!) {
  importContacts(csv: $csv) { created updated rejectedRows errors { code field message } }
}
"""

CONTACTS = """
query ($search: String) {
  contacts(first: 100, search: $search) {
    totalCount
    edges { node {
      firstName lastName
      emailAddresses { address label }
      accounts { name type }
    } }
  }
}
"""

ACCOUNTS = """
{
  accounts(first: 100) {
    totalCount
    edges { node {
      name type
      contacts { firstName }
      emails { login notify emailSync emailAddress { address label } }
    } }
  }
}
"""

CREATE_CONTACT = """
mutation ($input: CreateContactInput!) { createContact(input: $input) { errors { code } } }
"""

CREATE_ACCOUNT = """
mutation ($input: CreateAccountInput!) { createAccount(input: $input) { errors { code } } }
"""


async def run_import(api: Api, csv: str) -> dict[str, Any]:
    data = await api.data(IMPORT, {"csv": csv})
    return data["importContacts"]


async def contacts(api: Api, search: str | None = None) -> dict[str, dict[str, Any]]:
    """The firm's contacts keyed by their first address."""
    data = await api.data(CONTACTS, {"search": search})
    nodes = [edge["node"] for edge in data["contacts"]["edges"]]
    return {node["emailAddresses"][0]["address"]: node for node in nodes}


async def accounts(api: Api) -> dict[str, dict[str, Any]]:
    data = await api.data(ACCOUNTS)
    return {edge["node"]["name"]: edge["node"] for edge in data["accounts"]["edges"]}


async def create_contact(api: Api, first: str, *addresses: str) -> None:
    emails = [{"address": a, "label": "Email"} for a in addresses]
    await api.ok(
        CREATE_CONTACT, {"input": {"firstName": first, "lastName": "Existing", "emails": emails}}
    )


def addresses(contact: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["address"], e["label"]) for e in contact["emailAddresses"]]


HAPPY = (
    "\ufeffFirst Name,last_name,EMAIL, Work Email ,private_email,Account,Phone\n"
    "Ada,Lovelace,ada@example.com,ada@work.example,Ada.Private@Example.com,Lovelace Family,1\n"
    "Charles,Babbage,charles@example.com,,,LOVELACE family,2\n"
    "Grace,Hopper,grace@example.com,,,hopper inc,3\n"
    "Alan,Turing,alan@example.com,,,,4\n"
)


async def test_import_creates_contacts_with_addresses_and_account_links(acme: Firm) -> None:
    await acme.api.ok(CREATE_ACCOUNT, {"input": {"name": "Hopper Inc", "type": "COMPANY"}})

    result = await run_import(acme.api, HAPPY)

    assert result == {"created": 4, "updated": 0, "rejectedRows": [], "errors": []}
    found = await contacts(acme.api)
    assert set(found) == {
        "ada@example.com",
        "charles@example.com",
        "grace@example.com",
        "alan@example.com",
    }
    ada = found["ada@example.com"]
    assert (ada["firstName"], ada["lastName"]) == ("Ada", "Lovelace")
    # The email column is "Email"; further columns keep their header as written (trimmed).
    assert addresses(ada) == [
        ("ada@example.com", "Email"),
        ("ada@work.example", "Work Email"),
        ("Ada.Private@Example.com", "private_email"),
    ]
    assert ada["accounts"] == [{"name": "Lovelace Family", "type": "INDIVIDUAL"}]
    assert found["charles@example.com"]["accounts"] == ada["accounts"]
    # An existing account is matched case-insensitively and keeps its type.
    assert found["grace@example.com"]["accounts"] == [{"name": "Hopper Inc", "type": "COMPANY"}]
    assert found["alan@example.com"]["accounts"] == []

    by_name = await accounts(acme.api)
    assert set(by_name) == {"Lovelace Family", "Hopper Inc"}
    family = by_name["Lovelace Family"]
    assert sorted(c["firstName"] for c in family["contacts"]) == ["Ada", "Charles"]
    # Every address of every linked contact has its AccountEmail row, toggles off.
    assert sorted(e["emailAddress"]["address"] for e in family["emails"]) == [
        "Ada.Private@Example.com",
        "ada@example.com",
        "ada@work.example",
        "charles@example.com",
    ]
    assert all(
        not (e["login"] or e["notify"] or e["emailSync"])
        for account in by_name.values()
        for e in account["emails"]
    )
    assert [e["emailAddress"]["address"] for e in by_name["Hopper Inc"]["emails"]] == [
        "grace@example.com"
    ]


async def test_reimport_creates_no_duplicates(acme: Firm) -> None:
    await run_import(acme.api, HAPPY)
    before_contacts = await contacts(acme.api)
    before_accounts = await accounts(acme.api)

    result = await run_import(acme.api, HAPPY)

    assert result == {"created": 0, "updated": 4, "rejectedRows": [], "errors": []}
    assert await contacts(acme.api) == before_contacts
    assert await accounts(acme.api) == before_accounts


async def test_reimport_updates_names_adds_addresses_and_links(acme: Firm) -> None:
    await run_import(acme.api, HAPPY)

    result = await run_import(
        acme.api,
        "first_name,last_name,email,Home Email,account\n"
        # The match is case-insensitive; an empty name cell keeps the stored name.
        "Augusta Ada,,ADA@EXAMPLE.COM,ada@home.example,Analytical Engines\n",
    )

    assert result == {"created": 0, "updated": 1, "rejectedRows": [], "errors": []}
    ada = (await contacts(acme.api))["ada@example.com"]
    assert (ada["firstName"], ada["lastName"]) == ("Augusta Ada", "Lovelace")
    assert addresses(ada) == [
        ("ada@example.com", "Email"),
        ("ada@work.example", "Work Email"),
        ("Ada.Private@Example.com", "private_email"),
        ("ada@home.example", "Home Email"),
    ]
    assert [a["name"] for a in ada["accounts"]] == ["Analytical Engines", "Lovelace Family"]
    by_name = await accounts(acme.api)
    # The new address joins the account Ada was already in, and she brings all four to the new one.
    for name in ("Analytical Engines", "Lovelace Family"):
        emails = {e["emailAddress"]["address"] for e in by_name[name]["emails"]}
        assert {"ada@home.example", "ada@example.com"} <= emails
    assert len(by_name["Analytical Engines"]["emails"]) == 4


async def test_duplicate_rows_in_one_file_match_the_first(acme: Firm) -> None:
    result = await run_import(
        acme.api,
        "first_name,last_name,email,work email\n"
        "Ada,Lovelace,ada@example.com,\n"
        "Ada,King,Ada@Example.com,ada@work.example\n",
    )

    assert result == {"created": 1, "updated": 1, "rejectedRows": [], "errors": []}
    found = await contacts(acme.api)
    assert list(found) == ["ada@example.com"]
    assert found["ada@example.com"]["lastName"] == "King"
    assert addresses(found["ada@example.com"]) == [
        ("ada@example.com", "Email"),
        ("ada@work.example", "work email"),
    ]


async def test_rejected_rows_are_reported_and_valid_rows_commit(acme: Firm) -> None:
    await create_contact(acme.api, "Taken", "taken@example.com")
    await create_contact(acme.api, "Other", "other@example.com")
    long_name = "x" * 101

    result = await run_import(
        acme.api,
        "First Name,Last Name,Email,Work Email,Account\n"
        "Ada,Lovelace,ada@example.com,,Lovelace Family\n"  # 2: valid
        "Bad,Address,not-an-address,,New Account\n"  # 3
        "New,Person,new@example.com,TAKEN@example.com,New Account\n"  # 4
        ",,noname@example.com,,\n"  # 5
        "No,Email,,work@example.com,\n"  # 6
        f"{long_name},Long,long@example.com,,\n"  # 7
        # 8: the primary address is Other's, the further one Taken's: nothing may change.
        "Renamed,Other,other@example.com,taken@example.com,New Account\n"
        "Grace,Hopper,grace@example.com,grace@work.example,\n",  # 9: valid
    )

    assert result["created"] == 2
    assert result["updated"] == 0
    assert result["rejectedRows"] == [3, 4, 5, 6, 7, 8]
    assert [(e["code"], e["field"]) for e in result["errors"]] == [
        ("INVALID_EMAIL", ["csv", "3", "Email"]),
        ("EMAIL_TAKEN", ["csv", "4", "Work Email"]),
        ("INVALID_NAME", ["csv", "5", "First Name"]),
        ("MISSING_EMAIL", ["csv", "6", "Email"]),
        ("INVALID_NAME", ["csv", "7", "First Name"]),
        ("EMAIL_TAKEN", ["csv", "8", "Work Email"]),
    ]
    for error in result["errors"]:
        assert error["message"].startswith(f"Line {error['field'][1]}: "), error
    assert "TAKEN@example.com" in result["errors"][1]["message"]

    found = await contacts(acme.api)
    assert set(found) == {
        "taken@example.com",
        "other@example.com",
        "ada@example.com",
        "grace@example.com",
    }
    # Rejected rows left nothing behind: no name change, no address, no account.
    assert found["other@example.com"]["firstName"] == "Other"
    assert addresses(found["other@example.com"]) == [("other@example.com", "Email")]
    assert addresses(found["taken@example.com"]) == [("taken@example.com", "Email")]
    assert set(await accounts(acme.api)) == {"Lovelace Family"}


async def test_the_crms_name_rules_hold_at_their_limits_and_columns(acme: Firm) -> None:
    """The import applies the CRM's own name rules: 100 characters (200 for an account) are
    taken, one more is refused at the column that holds it."""
    result = await run_import(
        acme.api,
        "First Name,Last Name,Email,Account\n"
        f"{'f' * 100},{'l' * 100},fine@example.com,{'a' * 200}\n"  # 2: valid
        f"Ok,{'l' * 101},long-last@example.com,\n"  # 3
        f"Ok,Fine,long-account@example.com,{'a' * 201}\n",  # 4
    )
    assert result["rejectedRows"] == [3, 4]
    assert [(e["code"], e["field"]) for e in result["errors"]] == [
        ("INVALID_NAME", ["csv", "3", "Last Name"]),
        ("INVALID_NAME", ["csv", "4", "Account"]),
    ]
    assert set(await contacts(acme.api)) == {"fine@example.com"}
    assert set(await accounts(acme.api)) == {"a" * 200}


async def test_line_numbers_count_physical_lines_of_quoted_fields(acme: Firm) -> None:
    result = await run_import(
        acme.api,
        "first_name,last_name,email,notes\r\n"
        'Ada,Lovelace,ada@example.com,"first line\r\nsecond line\r\nthird line"\r\n'  # 2-4
        "Bad,One,bad@@example.com,\r\n"  # 5
        "\r\n"  # 6: blank, skipped
        'Bad,Two,"also bad",\r\n'  # 7
        '"Multi\nLine",Three,"bad three\n",x\n'  # 8-9
        "Grace,Hopper,grace@example.com,\n",  # 10
    )

    assert result["created"] == 2
    assert result["rejectedRows"] == [5, 7, 8]
    assert [e["field"][1] for e in result["errors"]] == ["5", "7", "8"]
    assert set(await contacts(acme.api)) == {"ada@example.com", "grace@example.com"}


async def test_headers_match_loosely_and_semicolons_work(acme: Firm) -> None:
    result = await run_import(
        acme.api, "FIRST NAME;Last_Name;eMail;ACCOUNT\nAda;Lovelace;ada@example.com;Family\n"
    )

    assert result == {"created": 1, "updated": 0, "rejectedRows": [], "errors": []}
    ada = (await contacts(acme.api))["ada@example.com"]
    assert ada["accounts"] == [{"name": "Family", "type": "INDIVIDUAL"}]


async def test_missing_column_rejects_everything(acme: Firm) -> None:
    result = await run_import(
        acme.api,
        "First Name,Email,Account\nAda,ada@example.com,Family\nGrace,grace@example.com,\n",
    )

    assert result["created"] == result["updated"] == 0
    assert result["rejectedRows"] == [2, 3]
    assert [(e["code"], e["field"]) for e in result["errors"]] == [
        ("MISSING_COLUMN", ["csv", "1", "last_name"])
    ]
    assert result["errors"][0]["message"].startswith("Line 1: ")
    assert await contacts(acme.api) == {}
    assert await accounts(acme.api) == {}


async def test_ambiguous_header_rejects_everything(acme: Firm) -> None:
    result = await run_import(
        acme.api, "first_name,last_name,Email,E Mail,EMAIL\nAda,Lovelace,a@example.com,,b@x.com\n"
    )

    assert [(e["code"], e["field"]) for e in result["errors"]] == [
        ("DUPLICATE_COLUMN", ["csv", "1", "EMAIL"])
    ]
    assert result["rejectedRows"] == [2]
    assert await contacts(acme.api) == {}


async def test_too_many_rows_rejects_everything(acme: Firm, settings: Settings) -> None:
    settings.max_import_rows = 2  # the app reads the limit from the same Settings object
    header = "first_name,last_name,email,account\n"
    rows = [f"P{i},Person,p{i}@example.com,Family\n" for i in range(3)]

    result = await run_import(acme.api, header + "".join(rows))

    assert result["created"] == result["updated"] == 0
    assert result["rejectedRows"] == [2, 3, 4]
    assert [(e["code"], e["field"]) for e in result["errors"]] == [("TOO_MANY_ROWS", ["csv"])]
    assert await contacts(acme.api) == {}
    assert await accounts(acme.api) == {}

    # At the limit the same file imports.
    result = await run_import(acme.api, header + "".join(rows[:2]))
    assert (result["created"], result["errors"]) == (2, [])


async def test_unreadable_files_are_invalid_csv(acme: Firm) -> None:
    for csv in ("", "  \n\n", 'first_name,last_name,email\nAda,"Lovelace,ada@example.com\n'):
        result = await run_import(acme.api, csv)
        assert [e["code"] for e in result["errors"]] == ["INVALID_CSV"], csv
        assert (result["created"], result["updated"]) == (0, 0)
    assert await contacts(acme.api) == {}


async def test_employee_without_manage_accounts_right_is_forbidden(
    acme: Firm, client: httpx.AsyncClient
) -> None:
    employee = await api_for(client, await add_staff(acme, "emp@acme.example"))
    manager = await api_for(
        client, await add_staff(acme, "mgr@acme.example", can_manage_accounts=True)
    )
    csv = "first_name,last_name,email\nAda,Lovelace,ada@example.com\n"

    body = await employee.post(IMPORT, {"csv": csv})

    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert await contacts(acme.api) == {}
    assert (await run_import(manager, csv))["created"] == 1


async def test_import_stays_inside_the_firm(acme: Firm, globex: Firm) -> None:
    globex_file = (
        "first_name,last_name,email,work email,account\n"
        "Globex,Person,shared@example.com,other@example.com,Shared Name\n"
    )
    assert (await run_import(globex.api, globex_file))["created"] == 1
    globex_contacts = await contacts(globex.api)
    globex_accounts = await accounts(globex.api)

    result = await run_import(
        acme.api,
        "first_name,last_name,email,work email,account\n"
        "Ada,Lovelace,SHARED@example.com,other@example.com,shared name\n",
    )

    # Globex's addresses are not "taken" in acme, and its account is not acme's.
    assert result == {"created": 1, "updated": 0, "rejectedRows": [], "errors": []}
    assert (await accounts(acme.api)).keys() == {"shared name"}
    ada = (await contacts(acme.api))["SHARED@example.com"]
    assert ada["firstName"] == "Ada"
    assert ada["accounts"] == [{"name": "shared name", "type": "INDIVIDUAL"}]
    assert await contacts(globex.api) == globex_contacts
    assert await accounts(globex.api) == globex_accounts


def test_cli_imports_a_file_with_a_summary(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PORTICO_DATABASE_URL": f"sqlite://{tmp_path / 'cli.sqlite3'}",
        "PORTICO_VAR_DIR": str(tmp_path / "var"),
        "PORTICO_OWNER_PASSWORD": PASSWORD,
    }

    def portico(*args: str) -> subprocess.CompletedProcess[str]:
        # cwd=tmp_path: the project's .env must not reach the subprocess.
        return subprocess.run(
            [str(bin_dir / "portico"), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert portico("migrate").returncode == 0
    created = portico(
        "create-firm", "--name", "Acme LLP", "--slug", "acme", "--owner-email", "o@acme.example"
    )
    assert created.returncode == 0, created.stderr
    good = tmp_path / "contacts.csv"
    good.write_bytes(
        "\ufefffirst_name,last_name,email,Work Email,account\n"
        "Ada,Lovelace,ada@example.com,ada@work.example,Lovelace Family\n"
        "Bad,Row,not-an-address,,\n"
        "Grace,Hopper,grace@example.com,,\n".encode()
    )

    first = portico("import-contacts", "--firm", "acme", str(good))
    again = portico("import-contacts", "--firm", "acme", str(good))

    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == "created 2, updated 0, rejected 1"
    assert lines[1].strip().startswith("Line 3: 'not-an-address' is not a valid email address")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == "created 0, updated 2, rejected 1"

    broken = tmp_path / "broken.csv"
    broken.write_text("first_name,email\nAda,ada@example.com\n")
    failed = portico("import-contacts", "--firm", "acme", str(broken))
    assert failed.returncode != 0
    assert "MISSING" not in failed.stdout
    assert "Line 1: the header has no last_name column." in failed.stderr

    unknown = portico("import-contacts", "--firm", "nope", str(good))
    assert unknown.returncode != 0
    assert "No firm with slug 'nope'" in unknown.stderr
