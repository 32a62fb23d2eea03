"""Signature schemes, secrets and sealing, each against a vector computed here from the
sender's documented algorithm (Standard Webhooks: by the `standardwebhooks` reference
package; Stripe, Shopify, GitHub: by their documentation's recipe)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from automations import signing
from automations.snapshot import SealedSecret
from ingress.signatures import SignatureError, SigningIndex, verify
from tests.ingress.conftest import make_snapshot

BODY = b'{"email": "ann@example.com", "country": "NL", "note": "caf\xc3\xa9"}'
TOL = 300.0


def h(**headers: str) -> dict[bytes, bytes]:
    """Request headers as the ingress sees them (ASGI: lower-case names, raw bytes)."""
    return {k.replace("_", "-").lower().encode(): v.encode() for k, v in headers.items()}


def standard_headers(secret: str, body: bytes, msg_id: str = "msg_2Lh9",
                     at: int | None = None) -> dict[bytes, bytes]:
    ts = int(time.time()) if at is None else at
    sig = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    return h(webhook_id=msg_id, webhook_timestamp=str(ts), webhook_signature=sig)


def key(scheme: str, secret: str) -> bytes:
    return signing.hmac_key(scheme, secret)


# --- Standard Webhooks ----------------------------------------------------------------------

def test_standard_the_specifications_own_vector() -> None:
    # The example of the Standard Webhooks specification (and of its reference libraries).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = h(webhook_id="msg_p5jXN8AQM9LWM0D4loKWxJek", webhook_timestamp="1614265330",
                webhook_signature="v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    got = verify("standard", headers, body, [key("standard", secret)], tolerance=TOL,
                 now=1614265330 + 10)
    assert got == "msg_p5jXN8AQM9LWM0D4loKWxJek"


def test_standard_signed_by_the_reference_package_verifies() -> None:
    secret = signing.generate()
    headers = standard_headers(secret, BODY)
    assert verify("standard", headers, BODY, [key("standard", secret)], tolerance=TOL) \
        == "msg_2Lh9"
    # And the package verifies what it signed against the same secret (our secrets fit it).
    Webhook(secret).verify(BODY, {k.decode(): v.decode() for k, v in headers.items()})


def test_standard_rotation_both_ways() -> None:
    old, new = signing.generate(), signing.generate()
    now = int(time.time())
    # The sender signs with both secrets while it rotates: either of ours matches.
    a = Webhook(old).sign("m1", datetime.fromtimestamp(now, UTC), BODY.decode())
    b = Webhook(new).sign("m1", datetime.fromtimestamp(now, UTC), BODY.decode())
    both = h(webhook_id="m1", webhook_timestamp=str(now), webhook_signature=f"{a} {b}")
    assert verify("standard", both, BODY, [key("standard", new)], tolerance=TOL) == "m1"
    assert verify("standard", both, BODY, [key("standard", old)], tolerance=TOL) == "m1"
    # We hold both (the old one in its grace period): a sender still on the old one passes.
    only_old = h(webhook_id="m1", webhook_timestamp=str(now), webhook_signature=a)
    assert verify("standard", only_old, BODY, [key("standard", new), key("standard", old)],
                  tolerance=TOL) == "m1"
    with pytest.raises(SignatureError) as exc:
        verify("standard", only_old, BODY, [key("standard", new)], tolerance=TOL)
    assert exc.value.code == "invalid_signature"


@pytest.mark.parametrize(("change", "code"), [
    ("body", "invalid_signature"),
    ("secret", "invalid_signature"),
    ("id", "invalid_signature"),
    ("old", "timestamp_out_of_range"),
    ("future", "timestamp_out_of_range"),
    ("missing", "missing_signature"),
    ("garbage", "invalid_signature"),
    ("v2_only", "invalid_signature"),
    ("timestamp_text", "invalid_signature"),
])
def test_standard_refusals(change: str, code: str) -> None:
    secret = signing.generate()
    now = int(time.time())
    body = BODY
    keys = [key("standard", secret)]
    headers = standard_headers(secret, BODY, at=now)
    if change == "body":
        body = BODY.replace(b"NL", b"BE")
    elif change == "secret":
        keys = [key("standard", signing.generate())]
    elif change == "id":
        headers[b"webhook-id"] = b"msg_other"
    elif change == "old":
        headers = standard_headers(secret, BODY, at=now - 301)
    elif change == "future":
        headers = standard_headers(secret, BODY, at=now + 301)
    elif change == "missing":
        del headers[b"webhook-signature"]
    elif change == "garbage":
        headers[b"webhook-signature"] = b"v1,not base64!!"
    elif change == "v2_only":
        headers[b"webhook-signature"] = headers[b"webhook-signature"].replace(b"v1,", b"v2,")
    elif change == "timestamp_text":
        headers[b"webhook-timestamp"] = b"yesterday"
    with pytest.raises(SignatureError) as exc:
        verify("standard", headers, body, keys, tolerance=TOL, now=now)
    assert exc.value.code == code
    assert len(exc.value.detail) > 20


def test_a_just_valid_timestamp_passes_at_both_edges() -> None:
    secret = signing.generate()
    now = int(time.time())
    for at in (now - 300, now + 300):
        assert verify("standard", standard_headers(secret, BODY, at=at), BODY,
                      [key("standard", secret)], tolerance=TOL, now=now) == "msg_2Lh9"


# --- Stripe, Shopify, GitHub: from their documented recipes ------------------------------

def test_stripe_signature() -> None:
    # stripe.com/docs/webhooks: signed_payload = "{t}.{body}"; v1 = hex HMAC-SHA256 with the
    # endpoint secret (its text, whsec_ included) as the key.
    secret = "whsec_" + "3f9aKx" * 6
    t = int(time.time())
    v1 = hmac.new(secret.encode(), f"{t}.".encode() + BODY, hashlib.sha256).hexdigest()
    other = hmac.new(b"whsec_previous_secret", f"{t}.".encode() + BODY,
                     hashlib.sha256).hexdigest()
    header = f"t={t},v1={other},v1={v1},v0=6ffbb59b2300aae63f272406069a9788598b792a"
    got = verify("stripe", h(stripe_signature=header), BODY, [key("stripe", secret)],
                 tolerance=TOL)
    assert got is not None and got.startswith(f"stripe:{t}:")
    with pytest.raises(SignatureError, match="timestamp_out_of_range"):
        old = t - 400
        v1_old = hmac.new(secret.encode(), f"{old}.".encode() + BODY, hashlib.sha256).hexdigest()
        verify("stripe", h(stripe_signature=f"t={old},v1={v1_old}"), BODY,
               [key("stripe", secret)], tolerance=TOL)
    with pytest.raises(SignatureError, match="invalid_signature"):
        verify("stripe", h(stripe_signature=header), BODY + b" ", [key("stripe", secret)],
               tolerance=TOL)
    with pytest.raises(SignatureError, match="missing_signature"):
        verify("stripe", {}, BODY, [key("stripe", secret)], tolerance=TOL)


def test_shopify_signature() -> None:
    # shopify.dev, "Verify webhooks": base64 of HMAC-SHA256 of the raw body, the app's client
    # secret as the key, in X-Shopify-Hmac-Sha256.
    secret = "shpss_" + "0a1b2c3d" * 4
    digest = base64.b64encode(hmac.new(secret.encode(), BODY, hashlib.sha256).digest()).decode()
    headers = h(x_shopify_hmac_sha256=digest, x_shopify_webhook_id="b54557e4-bdd9-4b37")
    assert verify("shopify", headers, BODY, [key("shopify", secret)], tolerance=TOL) \
        == "b54557e4-bdd9-4b37"
    with pytest.raises(SignatureError, match="invalid_signature"):
        verify("shopify", headers, BODY, [key("shopify", secret + "x")], tolerance=TOL)


def test_github_signature() -> None:
    # docs.github.com, "Validating webhook deliveries": "sha256=" + hex HMAC-SHA256 of the
    # payload with the webhook's secret, in X-Hub-Signature-256.
    secret = "It's a Secret to Everybody"
    payload = b"Hello, World!"
    # The documentation's own example value for this secret and payload:
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest() == expected
    headers = h(x_hub_signature_256=f"sha256={expected}", x_github_delivery="72d3162e-cc78")
    assert verify("github", headers, payload, [key("github", secret)], tolerance=TOL) \
        == "72d3162e-cc78"
    with pytest.raises(SignatureError, match="invalid_signature"):
        verify("github", h(x_hub_signature_256=f"sha1={expected}"), payload,
               [key("github", secret)], tolerance=TOL)


# --- secrets: generation, checks, sealing ----------------------------------------------------

def test_generated_secrets_are_standard_and_distinct() -> None:
    a, b = signing.generate(), signing.generate()
    assert a != b and a.startswith("whsec_")
    assert len(signing.hmac_key("standard", a)) == 32
    assert signing.check_secret("standard", a) is None


@pytest.mark.parametrize(("scheme", "secret", "why"), [
    ("standard", "no-prefix-but-long-enough", "starts with whsec_"),
    ("standard", "whsec_***not*base64***", "base64"),
    ("standard", "whsec_" + base64.b64encode(b"x" * 20).decode(), "24 to 64 bytes"),
    ("github", "short", "16 to 500"),
    ("stripe", "whsec_with a space inside", "without spaces"),
])
def test_secrets_that_do_not_fit(scheme: str, secret: str, why: str) -> None:
    problem = signing.check_secret(scheme, secret)
    assert problem is not None and why in problem


def test_sealed_secrets_open_only_with_the_key_and_the_automation() -> None:
    box = signing.SecretBox("key-one")
    sealed = box.seal("whsec_abc", "automation-1")
    assert "whsec_abc" not in sealed
    assert box.open(sealed, "automation-1") == "whsec_abc"
    assert box.seal("whsec_abc", "automation-1") != sealed  # a fresh nonce every time
    with pytest.raises(signing.SealError):
        signing.SecretBox("key-two").open(sealed, "automation-1")
    with pytest.raises(signing.SealError):
        box.open(sealed, "automation-2")
    with pytest.raises(signing.SealError):
        box.open(sealed[:-4] + "AAAA", "automation-1")


def test_signing_index_opens_current_secrets_and_skips_the_unreadable() -> None:
    box = signing.SecretBox("key-one")
    now = datetime.now(UTC)
    current, in_grace, expired = signing.generate(), signing.generate(), signing.generate()
    snap = make_snapshot(keys=[])
    snap = replace(snap, auth_mode="signature", signing_secrets=(
        SealedSecret("s1", box.seal(current, snap.id)),
        SealedSecret("s2", box.seal(in_grace, snap.id), now + timedelta(hours=1)),
        SealedSecret("s3", box.seal(expired, snap.id), now - timedelta(seconds=1)),
        SealedSecret("s4", signing.SecretBox("another").seal(current, snap.id))))
    index = SigningIndex(box)
    index.update(snap.id, snap)
    assert index.keys(snap.id) == [key("standard", current), key("standard", in_grace)]
    index.update(snap.id, None)
    assert index.keys(snap.id) == []
