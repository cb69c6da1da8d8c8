"""GraphQL documents for the CRM tests."""

from tests.support.api import Api

ACCOUNT_FIELDS = "id name type autoSaveAttachments"
CREATE_ACCOUNT = f"""
mutation($input: CreateAccountInput!) {{
  createAccount(input: $input) {{ errors {{ code field message }} account {{ {ACCOUNT_FIELDS} }} }}
}}
"""
UPDATE_ACCOUNT = f"""
mutation($id: ID!, $input: UpdateAccountInput!) {{
  updateAccount(id: $id, input: $input) {{ errors {{ code field message }} account {{ {ACCOUNT_FIELDS} }} }}
}}
"""
CREATE_CONTACT = """
mutation($input: CreateContactInput!) {
  createContact(input: $input) {
    errors { code field message }
    contact { id firstName lastName emailAddresses { id address label } accounts { id name } }
  }
}
"""
LINK = """
mutation($a: ID!, $c: ID!) {
  linkContact(accountId: $a, contactId: $c) {
    errors { code field message } account { id contacts { id } emails { id } }
  }
}
"""
UNLINK = """
mutation($a: ID!, $c: ID!) {
  unlinkContact(accountId: $a, contactId: $c) {
    errors { code field message } account { id contacts { id } emails { id } }
  }
}
"""
ADD_EMAIL = """
mutation($c: ID!, $email: EmailAddressInput!) {
  addEmailAddress(contactId: $c, email: $email) {
    errors { code field message } emailAddress { id address label contact { id } }
  }
}
"""
UPDATE_EMAIL = """
mutation($id: ID!, $address: String!, $label: String) {
  updateEmailAddress(id: $id, address: $address, label: $label) {
    errors { code field message } emailAddress { id address label }
  }
}
"""
REMOVE_EMAIL = """
mutation($id: ID!) {
  removeEmailAddress(id: $id) { errors { code field message } emailAddress { id address } }
}
"""
ACCOUNT = """
query($id: ID!) {
  account(id: $id) {
    id name
    contacts { id firstName }
    emails {
      id login notify emailSync
      emailAddress { id address label contact { id } }
      account { id }
    }
  }
}
"""


async def new_account(api: Api, name: str, type: str = "FAMILY") -> dict:
    payload = await api.ok(CREATE_ACCOUNT, {"input": {"name": name, "type": type}})
    return payload["account"]


async def new_contact(api: Api, first: str, last: str, emails=(), account_ids=()) -> dict:
    variables = {
        "input": {
            "firstName": first,
            "lastName": last,
            "emails": [{"address": a, "label": label} for a, label in emails],
            "accountIds": list(account_ids),
        }
    }
    return (await api.ok(CREATE_CONTACT, variables))["contact"]
