"""Staff management operations, as the API names them."""

MEMBER_FIELDS = "id email name role canManageAccounts canUseInbox active"
ADD = f"""
mutation($input: StaffMemberInput!) {{
  addStaffMember(input: $input) {{ errors {{ code field message }} staffMember {{ {MEMBER_FIELDS} }} }}
}}
"""
UPDATE = f"""
mutation($id: ID!, $input: UpdateStaffMemberInput!) {{
  updateStaffMember(id: $id, input: $input) {{
    errors {{ code field message }} staffMember {{ {MEMBER_FIELDS} }}
  }}
}}
"""
