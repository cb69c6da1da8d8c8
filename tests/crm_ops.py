"""GraphQL documents for the CRM tests."""

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
