"""Form bodies at the ingress: accepted and published as received (content type in a header),
refused with the documented errors, and dry-run with their fields as dotted paths."""

from __future__ import annotations

import orjson

from tests.automations.test_forms import BOUNDARY, MULTIPART, multipart
from tests.ingress.conftest import Ingress, read_raw
from tests.ingress.test_http_errors import err

FORM = "application/x-www-form-urlencoded"


async def test_form_bodies_are_published_as_received_with_their_content_type(
        ingress: Ingress) -> None:
    form = b"email=ann%40example.com&first_name=Ann&age=42&country=NL&customer[city]=Utrecht"
    latin = b"email=bob%40example.com&first_name=Beno%EEt&country=NL"
    parts = multipart([("email", "cy@example.com"), ("customer[city]", "Ede"),
                       ("country", "NL")])
    sent = [(form, FORM), (latin, f"{FORM}; charset=ISO-8859-1"), (parts, MULTIPART)]
    ids = []
    for body, ctype in sent:
        resp = await ingress.client.post(ingress.url(), content=body,
                                         headers={"Content-Type": ctype, **ingress.auth()})
        assert resp.status_code == 202, resp.text
        assert resp.json()["accepted"] == 1
        ids.append(resp.json()["event_id"])
    recs = await read_raw(ingress.bootstrap, ingress.topics.raw, at_least=3)
    by_id = {r.headers["request-id"].decode(): r for r in recs}
    for event_id, (body, ctype) in zip(ids, sent, strict=True):
        assert by_id[event_id].value == body  # the bytes as sent, never re-encoded
        assert by_id[event_id].headers["content-type"] == ctype.encode()


async def test_form_errors(ingress: Ingress) -> None:
    got = err(await ingress.client.post(
        ingress.url(), content=b"email=ann%40example.com&note=100%+sure",
        headers={"Content-Type": FORM, **ingress.auth()}), 400, "bad_form")
    assert "byte 32" in got["detail"] and got["detail"].endswith("."), got
    got = err(await ingress.client.post(
        ingress.url(), content=b"name=Zo%EB", headers={"Content-Type": FORM, **ingress.auth()}),
        400, "bad_form")
    assert "'name' at byte 7" in got["detail"] and "utf-8" in got["detail"], got
    got = err(await ingress.client.post(
        ingress.url(), content=b'{"email": "ann@example.com"}',
        headers={"Content-Type": FORM, **ingress.auth()}), 400, "bad_form")
    assert "application/json" in got["detail"], got  # curl -d without -H: a hint, not a 202
    with_file = multipart([("email", "ann@example.com"), ("photo", b"\x89PNG\r\n")],
                          extra={"photo": '; filename="me.png"\r\nContent-Type: image/png\r\n'})
    got = err(await ingress.client.post(ingress.url(), content=with_file, headers={
        "Content-Type": MULTIPART, **ingress.auth()}), 415, "unsupported_media_type")
    assert "field 'photo'" in got["detail"] and "me.png" not in got["detail"], got
    got = err(await ingress.client.post(ingress.url(), content=multipart([("a", "1")]), headers={
        "Content-Type": "multipart/form-data", **ingress.auth()}), 400, "bad_form")
    assert "boundary" in got["detail"]
    err(await ingress.client.post(ingress.url(), content=b"a=1", headers={
        "Content-Type": f"{FORM}; charset=utf-16", **ingress.auth()}),
        415, "unsupported_media_type")
    err(await ingress.client.post(ingress.url(), content=b"&", headers={
        "Content-Type": FORM, **ingress.auth()}), 400, "empty_body")
    # Nothing of the refused bodies went out: one good body is all there is.
    ok = await ingress.client.post(ingress.url(), content=b"email=x%40example.com",
                                   headers={"Content-Type": FORM, **ingress.auth()})
    assert ok.status_code == 202
    recs = await read_raw(ingress.bootstrap, ingress.topics.raw, at_least=1)
    assert [r.value for r in recs] == [b"email=x%40example.com"]


async def test_dry_run_shows_form_fields_as_dotted_paths(ingress: Ingress) -> None:
    body = (b"email=ann%40example.com&first_name=Ann&age=42&country=NL"
            b"&customer[city]=Utrecht&customer[tags][]=vip&customer[tags][]=new")
    resp = await ingress.client.post(ingress.url(test=True), content=body,
                                     headers={"Content-Type": FORM, **ingress.auth()})
    assert resp.status_code == 200, resp.text
    [record] = resp.json()["dry_run"]["records"]
    assert record["fields_found"] == ["email", "first_name", "age", "country", "customer.city",
                                      "customer.tags.0", "customer.tags.1"]
    assert record["outcome"] == "accepted"
    assert record["variables"] == {"first_name": "Ann", "age": 42, "city": "Utrecht"}

    parts = multipart([("email", "bob@example.com"), ("age", "old"), ("country", "NL"),
                       ("customer[city]", "Ede")])
    resp = await ingress.client.post(ingress.url(test=True), content=parts,
                                     headers={"Content-Type": MULTIPART, **ingress.auth()})
    assert resp.status_code == 200, resp.text
    [record] = resp.json()["dry_run"]["records"]
    assert record["fields_found"] == ["email", "age", "country", "customer.city"]
    assert record["outcome"] == "rejected"
    assert [e["kind"] for e in record["errors"]] == ["type_mismatch"]

    bad = await ingress.client.post(ingress.url(test=True), content=b"a=%zz",
                                    headers={"Content-Type": FORM, **ingress.auth()})
    assert bad.status_code == 400 and bad.json()["error"] == "bad_form"
    # The console's connection test gets each of them, with the content type to read it by.
    recs = await read_raw(ingress.bootstrap, ingress.topics.samples, at_least=3)
    samples = [orjson.loads(r.value) for r in recs]
    assert [s["content_type"] for s in samples] == [FORM, MULTIPART, FORM]
    assert samples[0]["body"] == body.decode()
    assert f"boundary={BOUNDARY}" in samples[1]["content_type"]
    assert samples[1]["answer"]["dry_run"]["records"][0]["fields_found"][-1] == "customer.city"
    assert samples[2]["status"] == 400
