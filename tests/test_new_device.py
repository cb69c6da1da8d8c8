"""The new-device notice (services/firm/devices.py) through the API and the link page: a
person's first device is noted silently, a known device (its cookie sent back) is quiet, and
another device mails the time, network address and browser with a link that ends every
session of that person."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx

from models import KnownDevice
from portico.app import create_app
from services.firm import devices
from services.shared.sessions import now
from tests.support.api import PASSWORD, Api, add_staff, api_for
from tests.support.login import deliver, text_of
from tests.support.smtp import smtp_fixture  # noqa: F401  (the `smtp` fixture)

SIGN_IN = (
    'mutation { staffSignIn(firm: "acme", email: "owner@acme.example", password: "'
    + PASSWORD
    + '") { errors { code } token secondFactor { id } } }'
)
END_LINK = re.compile(r"(/sessions/end\?token=[A-Za-z0-9_\-=]+)")
SAME_SITE = {"Origin": "http://portico.test"}


async def sign_in(
    http: httpx.AsyncClient, device: str | None = None, agent: str = "Browser/1"
) -> httpx.Response:
    http.cookies.clear()
    if device:
        http.cookies.set("portico_device", device, domain="portico.test")
    response = await http.post("/graphql", json={"query": SIGN_IN}, headers={"User-Agent": agent})
    http.cookies.clear()
    assert response.status_code == 200, response.text
    assert response.json()["data"]["staffSignIn"]["errors"] == []
    return response


async def test_a_new_device_is_told_and_its_link_ends_every_session(acme, client, settings, smtp):
    emma = await api_for(client, await add_staff(acme, "emma@acme.example"))
    first = await sign_in(client)
    device = first.cookies["portico_device"]
    assert "httponly" in first.headers["set-cookie"].lower()
    assert await deliver(settings, smtp) == []  # the first device is nothing to warn of
    known = await sign_in(client, device)
    assert "portico_device" not in known.cookies  # known: no new cookie, no mail
    assert await deliver(settings, smtp) == []
    assert await KnownDevice.all().count() == 1
    # Another browser: a notice naming it.
    other = await sign_in(client, None, "EvilBrowser/6.6")
    [notice] = await deliver(settings, smtp)
    assert notice["To"] == "owner@acme.example"
    text = text_of(notice)
    assert "EvilBrowser/6.6" in text and "127.0.0.1" in text and " UTC" in text
    link = END_LINK.search(text).group(1)
    tokens = [r.json()["data"]["staffSignIn"]["token"] for r in (first, known, other)]
    # The link's GET only asks; the POST ends every session of the owner.
    page = await client.get(link)
    assert page.status_code == 200 and "End all my sessions" in page.text
    for token in tokens:
        body = await Api(client, token).post("{ viewer { __typename } }")
        assert body["data"]["viewer"], (tokens, body)
    token = link.split("token=")[1]
    cross = await client.post(
        "/sessions/end", data={"token": token}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    done = await client.post("/sessions/end", data={"token": token}, headers=SAME_SITE)
    assert done.status_code == 200 and "every session is ended" in done.text
    for token in tokens:
        body = await Api(client, token).post("{ viewer { __typename } }")
        assert body["data"]["viewer"] is None
    # The owner's session made by the fixture ends too; other people's stay.
    assert (await acme.api.post("{ viewer { __typename } }"))["data"]["viewer"] is None
    assert (await emma.data("{ viewer { __typename } }"))["viewer"]


async def test_bad_end_links_are_refused(acme, client):
    for token in ("", "nope", "x" * 5000, "gAAAAAB" + "A" * 100):
        page = await client.get("/sessions/end", params={"token": token})
        assert page.status_code == 404, token
        posted = await client.post("/sessions/end", data={"token": token}, headers=SAME_SITE)
        assert posted.status_code == 404, token


async def test_with_a_second_factor_the_notice_waits_for_it(acme, client, settings, smtp):
    await sign_in(client)  # the first device
    await acme.api.ok(
        "mutation { updateFirmSettings(input: {staffSecondFactor: EMAIL_CODE}) "
        "{ errors { code } } }"
    )
    asked = await sign_in(client, None, "Other/2")
    assert "portico_device" not in asked.cookies
    [code_mail] = await deliver(settings, smtp)
    assert "Other/2" not in text_of(code_mail)
    challenge = asked.json()["data"]["staffSignIn"]["secondFactor"]["id"]
    code = re.search(r"\b(\d{6})\b", text_of(code_mail)).group(1)
    verify = """mutation($id: ID!, $code: String!) { verifySecondFactor(challengeId: $id,
      code: $code) { errors { code } token } }"""
    done = await client.post(
        "/graphql",
        json={"query": verify, "variables": {"id": challenge, "code": code}},
        headers={"User-Agent": "Other/2"},
    )
    assert done.json()["data"]["verifySecondFactor"]["token"]
    assert "portico_device" in done.cookies
    client.cookies.clear()
    notice = (await deliver(settings, smtp))[-1]
    assert "Other/2" in text_of(notice)


DEVICE_SIGN_IN = """mutation($device: String) {
  staffSignIn(firm: "acme", email: "owner@acme.example", password: "PASSWORD",
    deviceToken: $device) { errors { code } token deviceToken } }""".replace("PASSWORD", PASSWORD)


async def test_a_client_without_cookies_sends_its_device_token_back(acme, anon, settings, smtp):
    first = (await anon.data(DEVICE_SIGN_IN))["staffSignIn"]
    assert first["token"] and first["deviceToken"]
    device = first["deviceToken"]
    # The same script, its token sent back: known, quiet, no new row, no new token.
    for _ in range(3):
        again = (await anon.data(DEVICE_SIGN_IN, {"device": device}))["staffSignIn"]
        assert again["token"] and again["deviceToken"] is None
    assert await deliver(settings, smtp) == []
    assert await KnownDevice.all().count() == 1
    # Without it: a new device, reported.
    other = (await anon.data(DEVICE_SIGN_IN))["staffSignIn"]
    assert other["deviceToken"] and other["deviceToken"] != device
    [notice] = await deliver(settings, smtp)
    assert "new device" in notice["Subject"].lower() or "sign-in" in notice["Subject"].lower()


async def test_old_devices_are_forgotten_and_a_person_keeps_at_most_twenty(
    acme, anon, settings, smtp
):
    first = (await anon.data(DEVICE_SIGN_IN))["staffSignIn"]["deviceToken"]
    # Unused for 200 days: forgotten at the person's next new device.
    await KnownDevice.all().update(last_seen_at=now() - timedelta(days=200))
    await anon.data(DEVICE_SIGN_IN)
    assert await KnownDevice.all().count() == 1
    assert len(await deliver(settings, smtp)) == 1  # still not "first": a notice went
    # The forgotten device is new again, and reported.
    assert (await anon.data(DEVICE_SIGN_IN, {"device": first}))["staffSignIn"]["deviceToken"]
    assert len(await deliver(settings, smtp)) == 2  # (all mail delivered so far)
    for n in range(30):
        await KnownDevice.create(
            firm_id=acme.owner.firm_id,
            staff_member_id=acme.owner.pk,
            token_hash=f"{n:064d}",
        )
    await anon.data(DEVICE_SIGN_IN)
    assert await KnownDevice.all().count() == devices.MAX_DEVICES


def cookie_flags(response: httpx.Response, name: str) -> list[str]:
    [header] = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    return [part.strip().lower() for part in header.split(";")[1:]]


async def test_the_device_cookie_is_httponly_lax_and_secure_in_production(acme, client, settings):
    flags = cookie_flags(await sign_in(client), "portico_device")
    assert {"httponly", "samesite=lax", "path=/", f"max-age={400 * 24 * 3600}"} <= set(flags)
    assert "secure" not in flags  # development: plain http
    production = settings.model_copy(
        update={"env": "production", "secret_key": "k" * 32, "rate_limit": False}
    )
    app = create_app(production, manage_db=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://portico.test") as http:
        response = await http.post("/graphql", json={"query": SIGN_IN})
    assert response.json()["data"]["staffSignIn"]["errors"] == [], response.text
    flags = cookie_flags(response, "portico_device")
    assert {"httponly", "samesite=lax", "path=/", "secure", f"max-age={400 * 24 * 3600}"} <= set(
        flags
    )
