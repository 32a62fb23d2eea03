"""The console in a real browser (Playwright on Debian's Chromium) against the whole stack.

The main test walks the help article's wizard as a new user would: sign in, survey, incoming
data, a filter, the API key and a live connection test fed by curl, the mapping (two fields
mapped, one skipped, a missing variable created on the spot), name, message, status, error
e-mails, Finish; then a real webhook gives an invitation on the automation's page and a mail in
the SMTP sink. Screenshots of every step are saved (see conftest.py for where).
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.conftest import Stack

pytestmark = pytest.mark.kafka

SAMPLE = {"email": "ada@example.com", "first_name": "Ada", "age": 42, "customer_id": "c-17",
          "city": "Utrecht"}


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> dict[str, Any]:
    """What the survey platform would already hold: a survey (without the `age` variable the
    wizard will create) and its invitation message."""
    with stack.api() as api:
        survey = api.post("/v1/surveys", json={
            "name": "Customer satisfaction",
            "variables": [{"name": "first_name", "type": "text"}]}).json()
        message = api.post("/v1/messages", json={
            "name": "Invitation", "subject": "{{ first_name }}, how did we do?",
            "body": "Dear {{ first_name }},\n\nPlease answer: {{ survey_link }}\n"}).json()
    return {"survey": survey, "message": message}


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    p = context.new_page()
    try:
        yield p
    finally:
        context.close()


def sign_in(page: Any, stack: Stack, token: str | None = None) -> None:
    page.goto(f"{stack.admin}/console/")
    page.get_by_label("Admin token").fill(token or stack.token)
    with page.expect_navigation():
        page.keyboard.press("Enter")  # the keyboard alone signs in


UNLABELLED_JS = """() => Array.from(document.querySelectorAll('input, select, textarea'))
  .filter(el => el.type !== 'hidden' && !el.closest('[aria-hidden=true]'))
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
  .map(el => el.name || el.id)"""
OVERFLOW_JS = "() => document.documentElement.scrollWidth - window.innerWidth"


def shot(page: Any, folder: Path, name: str) -> None:
    """A full-page screenshot; every input on the page must have a label."""
    assert page.evaluate(UNLABELLED_JS) == [], f"inputs without a label on {name}"
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def next_step(page: Any) -> None:
    page.locator(".nav-buttons").get_by_role("button", name=re.compile("^(Next|Finish)$")).click()


def curl_sample(curl_line: str, body: dict[str, Any]) -> dict[str, Any]:
    """The page's curl line, with our own sample body."""
    args = shlex.split(curl_line)
    args[args.index("-d") + 1] = json.dumps(body)
    res = subprocess.run([*args, "-w", "\n%{http_code}"], capture_output=True, text=True,
                         timeout=30)
    out, status = res.stdout.rsplit("\n", 1)
    assert status == "200", res.stdout + res.stderr
    return json.loads(out)


def wait_for(predicate: Any, timeout: float = 40.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def walk_to_connection_test(page: Any, stack: Stack, folder: Path | None, *,
                            filter_value: str = "18") -> None:
    """Sign in and go through survey, incoming data and filters (age gte 18)."""
    sign_in(page, stack)
    page.get_by_role("button", name="Create automation").click()
    # 1. survey
    page.get_by_label("Customer satisfaction", exact=True).check()
    if folder:
        shot(page, folder, "1-survey")
    next_step(page)
    # 2. incoming data: everything but `city`
    page.get_by_label("Every field except those listed (exclude)").check()
    page.get_by_label("Fields, one dotted path a line").fill("city")
    page.get_by_label("Field with the respondent's e-mail address").fill("email")
    if folder:
        shot(page, folder, "2-incoming-data")
    next_step(page)
    # 3. filters: age is at least 18, a number
    page.get_by_role("button", name="Add condition").first.click()
    page.get_by_label("Field", exact=True).fill("age")
    with page.expect_navigation():  # the page re-renders: the value input fits the operator
        page.get_by_label("Operator").select_option("gte")
    with page.expect_navigation():
        page.get_by_label("Value type").select_option("number")
    assert page.get_by_label("Value", exact=True).get_attribute("type") == "number"
    page.get_by_label("Value", exact=True).fill(filter_value)
    if folder:
        shot(page, folder, "3-filters")
    next_step(page)
    page.get_by_role("heading", name=re.compile("API key and connection test")).wait_for()


def test_wizard_end_to_end(page: Any, stack: Stack, seeded: dict[str, Any],
                           screenshots: Path) -> None:
    walk_to_connection_test(page, stack, screenshots)

    # 4. API key and connection test: the key once, then samples appear live.
    key = page.locator("#api-key").inner_text().strip()
    assert len(key) >= 20
    curl_line = page.locator("#curl-line").inner_text().strip()
    assert key in curl_line and "/test" in curl_line
    webhook_url = page.locator("#webhook-url").inner_text().strip()
    assert webhook_url.startswith(stack.ingress)
    shot(page, screenshots, "4-connection-waiting")
    answer = curl_sample(curl_line, SAMPLE)  # while the page waits
    assert answer["dry_run"]["summary"]["accepted"] == 1
    samples = page.locator("#samples")
    samples.get_by_text("1 accepted").wait_for(timeout=20_000)
    assert "c-17" in samples.inner_text()  # the body as it arrived
    shot(page, screenshots, "4-connection-sample")
    next_step(page)

    # 5. mapping: every field found, typed, with an example; undecided ones are flagged.
    table = page.locator("#mapping-table")
    for path in ("email", "first_name", "age", "customer_id", "city"):
        assert table.locator(f"tr[data-field='{path}']").count() == 1, path
    assert "not taken in" in table.locator("tr[data-field='city']").inner_text()
    assert "number" in table.locator("tr[data-field='age']").inner_text()
    next_step(page)  # nothing decided yet: refused, and the fields are named
    alert = page.get_by_role("alert")
    assert "Not decided" in alert.inner_text() and "customer_id" in alert.inner_text()
    # `age` has no variable yet: create it here.
    page.get_by_label("Name", exact=True).fill("age")
    page.get_by_label("Type", exact=True).select_option("number")
    page.get_by_role("button", name="Create variable").click()
    page.get_by_text("Background variable created.").wait_for()
    page.get_by_label("Variable for first_name").select_option("first_name")
    page.get_by_label("Variable for age").select_option("age")
    page.get_by_label("Variable for customer_id").select_option("__skip__")
    shot(page, screenshots, "5-mapping")
    next_step(page)

    # 6. name, message, delay
    page.get_by_label("Name", exact=True).fill("Webshop orders")
    page.get_by_label("Message").select_option(label="Invitation")
    assert not page.get_by_label("Delay the invitations").is_checked()
    shot(page, screenshots, "6-settings")
    next_step(page)
    # 7. status: enabled by default
    assert page.get_by_label(re.compile("^Enabled")).is_checked()
    shot(page, screenshots, "7-status")
    next_step(page)
    # 8. error notifications: on, two recipients
    page.get_by_label("E-mail error notifications").check()
    page.get_by_label("Recipient 1").fill("ops@example.com")
    page.get_by_role("button", name="Add recipient").click()
    page.get_by_label("Recipient 2").fill("lead@example.com")
    assert page.get_by_label("E-mail error notifications").is_checked()
    shot(page, screenshots, "8-notifications")
    next_step(page)  # Finish

    page.get_by_role("heading", name="Webshop orders").wait_for()
    automation_id = page.url.rstrip("/").rsplit("/", 1)[1]
    assert "Enabled" in page.locator("main").inner_text()
    shot(page, screenshots, "9-automation")
    with stack.api() as api:
        saved = api.get(f"/v1/automations/{automation_id}").json()
    assert saved["enabled"] is True and saved["disabled_reason"] is None
    assert saved["filters"] == {"all": [{"field": "age", "op": "gte", "value": 18}]}
    assert {m["field"]: m["variable"] for m in saved["mapping"]} == {
        "first_name": "first_name", "age": "age", "customer_id": None}
    assert saved["fields"] == {"mode": "exclude", "paths": ["city"]}
    assert saved["error_notifications"] == {
        "enabled": True, "recipients": ["ops@example.com", "lead@example.com"]}

    # A real webhook: the invitation shows on the automation's page, the mail in the sink.
    r = httpx.post(webhook_url, json={**SAMPLE, "email": "bea@example.com", "age": "37"},
                   headers={"X-API-Key": key}, timeout=10)
    assert r.status_code == 202, r.text

    def mail() -> Any:
        for eml in stack.mail_dir.glob("*.eml"):
            msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
            if msg["To"] == "bea@example.com":
                return msg
        return None
    msg = wait_for(mail, what="the invitation mail in the SMTP sink")
    assert "Ada" in msg.get_body(preferencelist=("plain",)).get_content()

    def found_sent() -> bool:
        page.goto(f"{stack.admin}/console/automations/{automation_id}")
        page.get_by_label("E-mail address").fill("bea@example.com")
        page.get_by_role("button", name="Find").click()
        return "sent" in page.locator("#lookup-result").inner_text()
    wait_for(found_sent, what="the sent invitation on the automation's page")
    shot(page, screenshots, "10-invitation-found")

    # The list shows the day's counts (the worker's counts topic, the notifier's mails).
    def counted() -> bool:
        page.goto(f"{stack.admin}/console/automations")
        row = page.locator(f"tr[data-automation='{automation_id}']")
        cells = [c.strip() for c in row.locator("td.num").all_inner_texts()]
        return cells == ["1", "0", "0", "1", "1"]
    wait_for(counted, what="accepted/filtered/failed/invited/mailed = 1/0/0/1/1")
    shot(page, screenshots, "11-list")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone's width
    assert page.evaluate(OVERFLOW_JS) <= 0, "the page scrolls sideways on a phone"
    shot(page, screenshots, "11-list-phone")
    page.goto(f"{stack.admin}/console/automations/{automation_id}")
    assert page.evaluate(OVERFLOW_JS) <= 0, "the page scrolls sideways on a phone"
    shot(page, screenshots, "9-automation-phone")


def test_failing_filter_shows_its_verdict_in_the_test_step(page: Any, stack: Stack,
                                                           seeded: dict[str, Any],
                                                           screenshots: Path) -> None:
    walk_to_connection_test(page, stack, None)
    curl_line = page.locator("#curl-line").inner_text().strip()
    curl_sample(curl_line, {**SAMPLE, "age": 12})
    curl_sample(curl_line, {**SAMPLE, "age": "old"})
    samples = page.locator("#samples")
    samples.get_by_text("age gte 18: the value is 12").wait_for(timeout=20_000)
    samples.get_by_text("of the wrong type (not a number)").wait_for()
    assert samples.locator(".verdict-filtered_out").count() == 2
    shot(page, screenshots, "filter-verdict")


def _automation(stack: Stack, seeded: dict[str, Any], name: str) -> str:
    with stack.api() as api:
        r = api.post("/v1/automations", json={
            "name": name, "survey_id": seeded["survey"]["id"],
            "message_id": seeded["message"]["id"], "email_field": "email",
            "fields": {"mode": "exclude", "paths": []},
            "mapping": [{"field": "first_name", "variable": "first_name"}]})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def test_disabling_with_a_reason_shows_on_the_list(page: Any, stack: Stack,
                                                   seeded: dict[str, Any],
                                                   screenshots: Path) -> None:
    automation_id = _automation(stack, seeded, "Newsletter sign-ups")
    sign_in(page, stack)
    page.goto(f"{stack.admin}/console/automations/{automation_id}")
    page.get_by_label("Reason for disabling").fill("Paused for the holidays")
    page.get_by_role("button", name="Disable").click()
    page.get_by_text("Disabled.").wait_for()
    page.goto(f"{stack.admin}/console/automations?status=disabled")
    status = page.locator(f"tr[data-automation='{automation_id}'] td.status").inner_text()
    assert status == "Disabled: Paused for the holidays"
    shot(page, screenshots, "list-disabled")


def test_a_wrong_token_cannot_sign_in(page: Any, stack: Stack, screenshots: Path) -> None:
    sign_in(page, stack, token="not-the-token")
    assert "That is not the admin token." in page.get_by_role("alert").inner_text()
    assert not [c for c in page.context.cookies() if c["name"] == "hs_console"]
    page.goto(f"{stack.admin}/console/automations")
    assert page.url.endswith("/console/signin")
    shot(page, screenshots, "signin-refused")


def test_a_form_without_the_csrf_token_is_refused(page: Any, stack: Stack,
                                                  seeded: dict[str, Any]) -> None:
    automation_id = _automation(stack, seeded, "Forged form target")
    sign_in(page, stack)
    cookie = next(c for c in page.context.cookies() if c["name"] == "hs_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    url = f"{stack.admin}/console/automations/{automation_id}/disable"
    # The browser's session cookie rides along (page.request shares the context's cookies).
    without = page.request.post(url, form={"reason": "forged"})
    assert without.status == 403
    wrong = page.request.post(url, form={"reason": "forged", "csrf": "0" * 64})
    assert wrong.status == 403
    with stack.api() as api:
        assert api.get(f"/v1/automations/{automation_id}").json()["enabled"] is True
    # The same form from the page itself (with its token) works.
    page.goto(f"{stack.admin}/console/automations/{automation_id}")
    page.get_by_role("button", name="Disable").click()
    page.get_by_text("Disabled.").wait_for()


def test_editing_runs_the_same_wizard_and_saves_only_at_finish(page: Any, stack: Stack,
                                                               seeded: dict[str, Any]) -> None:
    automation_id = _automation(stack, seeded, "Support tickets")
    sign_in(page, stack)
    page.goto(f"{stack.admin}/console/automations/{automation_id}")
    page.get_by_role("button", name="Edit settings").click()
    assert page.get_by_label("Customer satisfaction", exact=True).is_checked()
    for _ in range(5):  # survey, incoming data, filters, connection test, mapping
        next_step(page)
    page.get_by_role("heading", name=re.compile("Name, message and delay")).wait_for()
    assert page.get_by_label("Name", exact=True).input_value() == "Support tickets"
    page.get_by_label("Name", exact=True).fill("Support tickets (NL)")
    page.get_by_label("Delay the invitations").check()
    page.get_by_label("Number of days").fill("3")
    next_step(page)
    with stack.api() as api:  # nothing saved before Finish
        assert api.get(f"/v1/automations/{automation_id}").json()["name"] == "Support tickets"
    next_step(page)
    next_step(page)  # Finish
    page.get_by_role("heading", name="Support tickets (NL)").wait_for()
    with stack.api() as api:
        saved = api.get(f"/v1/automations/{automation_id}").json()
    assert (saved["name"], saved["delay_days"], saved["enabled"]) == (
        "Support tickets (NL)", 3, True)
    assert saved["mapping"] == [{"field": "first_name", "variable": "first_name"}]
