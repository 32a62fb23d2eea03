"""Signed webhooks: the signature formats the ingress verifies, one table row per scheme.

Every scheme is an HMAC-SHA256 over some signed prefix plus the body *as received* (the raw
bytes; nothing is decoded or re-encoded first), compared in constant time with every
signature the request presents, for every current (or in-grace) secret of the automation:

- standard (Standard Webhooks): `webhook-signature: v1,<base64>` (a space-separated list),
  over `webhook-id.webhook-timestamp.body`; timestamp `webhook-timestamp`; delivery id
  `webhook-id`.
- stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>]`, over `t.body`; timestamp `t`;
  delivery id `t` and the first v1.
- shopify: `X-Shopify-Hmac-Sha256: <base64>`, over the body; no timestamp; delivery id
  `X-Shopify-Webhook-Id`.
- github: `X-Hub-Signature-256: sha256=<hex>`, over the body; no timestamp; delivery id
  `X-GitHub-Delivery`.

A signed timestamp further than the tolerance (5 minutes) from the ingress's clock is refused:
a replay outside the window is a 401. Inside it, the delivery id is the key of the ingress's
idempotency store, so a replay is answered like the first request and published once.
Shopify and GitHub sign no timestamp: a replay of their request is only caught by its
delivery id within the idempotency window (docs/DESIGN.md says so).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from automations import signing
from automations.snapshot import AutomationSnapshot

log = logging.getLogger(__name__)

MAX_SIGNATURES = 16  # more in one header is no rotation any sender does; refuse the rest
MAX_DELIVERY_ID = 255


class SignatureError(Exception):
    """A request whose signature does not authenticate it: `code` is the ingress's error."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Presented:
    """What a request's headers present: the bytes signed before the body, the signatures,
    the signed timestamp (if the scheme signs one) and the delivery id (if it has one)."""

    prefix: bytes
    signatures: tuple[bytes, ...]
    timestamp: int | None
    delivery_id: str | None


Headers = Mapping[bytes, bytes]


def _missing(*names: str) -> SignatureError:
    return SignatureError("missing_signature", "This automation requires signed requests: "
                          f"send {', '.join(names)}.")


def _malformed(what: str) -> SignatureError:
    return SignatureError("invalid_signature", f"The {what} is malformed.")


def _b64(value: bytes, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(what) from None


def _hex(value: bytes, what: str) -> bytes:
    try:
        return bytes.fromhex(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise _malformed(what) from None


def _timestamp(value: bytes, what: str) -> int:
    if not value.isdigit() or len(value) > 12:
        raise _malformed(what)
    return int(value)


def _delivery_id(value: bytes | None) -> str | None:
    if not value:
        return None
    if len(value) > MAX_DELIVERY_ID or not value.isascii() or any(
            c < 0x20 or c == 0x7F for c in value):
        raise _malformed("delivery id (1 to 255 printable ASCII characters)")
    return value.decode("ascii")


def _standard(h: Headers) -> Presented:
    wid, ts, sig = h.get(b"webhook-id"), h.get(b"webhook-timestamp"), h.get(b"webhook-signature")
    if not (wid and ts and sig):
        raise _missing("webhook-id", "webhook-timestamp", "webhook-signature (Standard Webhooks)")
    sigs = []
    for part in sig.split()[:MAX_SIGNATURES]:
        version, _, value = part.partition(b",")
        if version == b"v1":  # other versions (v1a: asymmetric) are not ours to check
            sigs.append(_b64(value, "webhook-signature"))
    timestamp = _timestamp(ts, "webhook-timestamp")
    delivery = _delivery_id(wid)
    return Presented(wid + b"." + ts + b".", tuple(sigs), timestamp, delivery)


def _stripe(h: Headers) -> Presented:
    header = h.get(b"stripe-signature")
    if not header:
        raise _missing("Stripe-Signature")
    t: bytes | None = None
    sigs: list[bytes] = []
    for item in header.split(b",")[:MAX_SIGNATURES + 2]:
        name, _, value = item.strip().partition(b"=")
        if name == b"t":
            t = value
        elif name == b"v1":
            sigs.append(_hex(value, "Stripe-Signature"))
    if t is None:
        raise _malformed("Stripe-Signature (no t=)")
    timestamp = _timestamp(t, "Stripe-Signature timestamp")
    delivery = None if not sigs else f"stripe:{timestamp}:{sigs[0].hex()[:32]}"
    return Presented(t + b".", tuple(sigs), timestamp, delivery)


def _shopify(h: Headers) -> Presented:
    sig = h.get(b"x-shopify-hmac-sha256")
    if not sig:
        raise _missing("X-Shopify-Hmac-Sha256")
    return Presented(b"", (_b64(sig.strip(), "X-Shopify-Hmac-Sha256"),), None,
                     _delivery_id(h.get(b"x-shopify-webhook-id")))


def _github(h: Headers) -> Presented:
    sig = h.get(b"x-hub-signature-256")
    if not sig:
        raise _missing("X-Hub-Signature-256")
    algorithm, _, value = sig.strip().partition(b"=")
    if algorithm != b"sha256":
        raise _malformed("X-Hub-Signature-256 (sha256=<hex>)")
    return Presented(b"", (_hex(value, "X-Hub-Signature-256"),), None,
                     _delivery_id(h.get(b"x-github-delivery")))


# scheme -> (parser, the headers it reads)
SCHEMES: dict[str, tuple[Callable[[Headers], Presented], tuple[bytes, ...]]] = {
    "standard": (_standard, (b"webhook-id", b"webhook-timestamp", b"webhook-signature")),
    "stripe": (_stripe, (b"stripe-signature",)),
    "shopify": (_shopify, (b"x-shopify-hmac-sha256", b"x-shopify-webhook-id")),
    "github": (_github, (b"x-hub-signature-256", b"x-github-delivery")),
}
assert set(SCHEMES) == set(signing.SCHEMES)
# Every header any scheme reads: the one pass over a request's headers keeps these.
SIGNATURE_HEADERS = frozenset(h for _, names in SCHEMES.values() for h in names)


def verify(scheme: str, headers: Headers, body: bytes, keys: Sequence[bytes], *,
           tolerance: float, now: float | None = None) -> str | None:
    """The request's delivery id (None when its scheme has none) once a signature of
    `headers` matches `body` under one of `keys`; raises `SignatureError` otherwise."""
    presented = SCHEMES[scheme][0](headers)
    if presented.timestamp is not None:
        t = time.time() if now is None else now
        if abs(t - presented.timestamp) > tolerance:
            raise SignatureError(
                "timestamp_out_of_range",
                f"The signed timestamp is more than {tolerance:.0f} seconds from the "
                "ingress's clock: a replayed or delayed request is refused; sign it anew.")
    if not presented.signatures:
        raise SignatureError("invalid_signature", "The request carries no signature of a "
                             "version this scheme verifies.")
    matched = False
    for key in keys:
        mac = hmac.new(key, presented.prefix, hashlib.sha256)
        mac.update(body)
        digest = mac.digest()
        for sig in presented.signatures:
            # No early exit: the time taken says nothing about which secret or signature.
            matched |= hmac.compare_digest(digest, sig)
    if not matched:
        raise SignatureError("invalid_signature", "No signature matches the body with this "
                             "automation's signing secret (wrong or rotated-out secret, or "
                             "the body was changed after signing).")
    return presented.delivery_id


class SigningIndex:
    """The HMAC keys of each automation that needs signatures, opened once per snapshot (a
    `ConfigCache` listener): a request costs its HMACs, never a decryption."""

    def __init__(self, box: signing.SecretBox) -> None:
        self.box = box
        self._keys: dict[str, tuple[tuple[bytes, float | None], ...]] = {}

    def update(self, automation_id: str, snapshot: AutomationSnapshot | None) -> None:
        if snapshot is None or not signing.needs_signature(snapshot.auth_mode):
            self._keys.pop(automation_id, None)
            return
        keys = []
        for sealed in snapshot.signing_secrets:
            try:
                secret = self.box.open(sealed.sealed, automation_id)
                key = signing.hmac_key(snapshot.signature_scheme, secret)
            except signing.SealError:
                log.error("signing secret %s of automation %s does not open: is "
                          "HOOKSTREAM_SECRETS_KEY the control plane's?", sealed.id, automation_id)
                continue
            except (binascii.Error, ValueError):
                log.error("signing secret %s of automation %s is no %s secret; rotate it",
                          sealed.id, automation_id, snapshot.signature_scheme)
                continue
            keys.append((key, None if sealed.expires_at is None
                         else sealed.expires_at.timestamp()))
        self._keys[automation_id] = tuple(keys)

    def keys(self, automation_id: str, now: float | None = None) -> list[bytes]:
        """The automation's current and in-grace keys."""
        t = time.time() if now is None else now
        return [k for k, expires in self._keys.get(automation_id, ())
                if expires is None or expires > t]
