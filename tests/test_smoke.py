async def test_owner_sees_own_firm(acme):
    data = await acme.api.data("{ firm { name slug } viewer { ... on StaffMember { role } } }")
    assert data == {"firm": {"name": "Acme LLP", "slug": "acme"}, "viewer": {"role": "OWNER"}}
