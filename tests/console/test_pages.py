"""The console's pages in-process (httpx over ASGI, the admin app's lifespan on a real Kafka):
sign-in and its CSRF, surveys and variables, messages and their preview, the lists."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from control_plane.api import create_app
from core.settings import Settings

pytestmark = pytest.mark.kafka
TOKEN = "pages-test-token"


@pytest.fixture
async def console(kafka_bootstrap: str, topic_prefix: str,
                  tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/var/hookstream.db",
                        kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix,
                        topic_partitions=1, admin_token=SecretStr(TOKEN))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://admin") as client:
            yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def sign_in(c: httpx.AsyncClient) -> str:
    """Sign in; the CSRF token of the session's forms."""
    form = await c.get("/console/signin")
    r = await c.post("/console/signin", data={"csrf": csrf_of(form.text), "token": TOKEN})
    assert r.status_code == 303 and r.headers["location"] == "/console/automations"
    page = await c.get("/console/automations")
    assert page.status_code == 200
    return csrf_of(page.text)


async def test_signin_needs_its_own_csrf_token_and_pages_need_a_session(
        console: httpx.AsyncClient) -> None:
    assert (await console.get("/console/automations")).headers["location"] == "/console/signin"
    assert (await console.get("/console/automations/x/samples")).status_code == 401
    await console.get("/console/signin")  # the pre-session cookie alone is not enough
    r = await console.post("/console/signin", data={"token": TOKEN})
    assert r.status_code == 403
    assert "hs_console" not in console.cookies
    csrf = await sign_in(console)
    r = await console.post("/console/signout", data={"csrf": csrf})
    assert r.status_code == 303
    assert (await console.get("/console/surveys")).status_code == 303


async def test_surveys_variables_and_messages_with_a_preview(console: httpx.AsyncClient) -> None:
    csrf = await sign_in(console)
    refused = await console.post("/console/surveys", data={"name": "Forged"})
    assert refused.status_code == 403
    r = await console.post("/console/surveys", data={"csrf": csrf, "name": "Onboarding"})
    assert r.status_code == 200 and "Survey created." in r.text
    assert "Forged" not in r.text
    survey_id = re.search(r'action="/console/surveys/([^/"]+)/variables"', r.text).group(1)
    r = await console.post(f"/console/surveys/{survey_id}/variables", data={
        "csrf": csrf, "var_name": "plan", "var_type": "choice", "var_options": "basic, pro"})
    assert r.status_code == 200 and "basic, pro" in r.text
    bad = await console.post(f"/console/surveys/{survey_id}/variables", data={
        "csrf": csrf, "var_name": "plan", "var_type": "text", "var_options": ""})
    assert bad.status_code == 422 and "already has a variable named" in bad.text

    r = await console.post("/console/messages", data={
        "csrf": csrf, "name": "Welcome", "subject": "Your {{ plan }} plan",
        "body": "Hello {{ first_name }}, answer here: {{ survey_link }}"})
    assert r.status_code == 200 and "Message created." in r.text
    message_id = re.search(r'href="/console/messages/([^"?]+)"', r.text).group(1)
    preview = await console.get(f"/console/messages/{message_id}",
                                params={"survey_id": survey_id})
    subject = re.search(r'id="preview-subject">([^<]*)<', preview.text).group(1)
    assert subject == "Your basic plan"  # the choice's first option as the sample value
    assert "has no variable &#39;first_name&#39;" in preview.text  # flagged for this survey
    custom = await console.get(f"/console/messages/{message_id}", params={
        "survey_id": survey_id, "v.first_name": "Ada & Bob"})
    assert "Hello Ada &amp; Bob, answer here: http" in custom.text  # escaped, rendered

    for path in ("/console/invitations", "/console/respondents", "/console/messages",
                 "/console/surveys?cursor=", "/console/automations?status=disabled"):
        assert (await console.get(path)).status_code == 200, path
    for path in ("/console/invitations", "/console/surveys", "/console/respondents"):
        bad_cursor = await console.get(path, params={"cursor": "nope"})
        assert bad_cursor.status_code == 200 and "not a cursor" in bad_cursor.text, path
