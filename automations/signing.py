"""Webhook signing secrets: how an automation may authenticate its webhooks besides (or
instead of) the API key, and how the secret travels from the control plane to the ingress.

- Modes (`AUTH_MODES`): `key` (the API key only, the default), `signature` (a valid signature
  only), `both` (the key and a valid signature).
- Schemes (`SCHEMES`): `standard` (Standard Webhooks), `stripe`, `shopify`, `github`; the
  ingress's `ingress/signatures.py` verifies each.
- The control plane generates a secret (`generate`: `whsec_` + base64 of 32 random bytes, the
  Standard Webhooks format) and shows it once; or takes one the sender owns (Stripe's and
  Shopify's are made by them). HMAC needs the secret itself, so it cannot be stored hashed like
  an API key: it is *sealed* (`SecretBox`: AES-256-GCM under a key derived from
  `HOOKSTREAM_SECRETS_KEY`, bound to the automation's id) in the SQL store and in the snapshot
  on `automations.config`. Only processes holding that key (the control plane, the ingress)
  can open it; the worker, the notifier and anyone tapping the topic see ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

AuthMode = Literal["key", "signature", "both"]
Scheme = Literal["standard", "stripe", "shopify", "github"]
AUTH_MODES: Final[tuple[AuthMode, ...]] = ("key", "signature", "both")
SCHEMES: Final[tuple[Scheme, ...]] = ("standard", "stripe", "shopify", "github")
SECRET_PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 32
MIN_SECRET_CHARS: Final = 16  # a secret the sender made (Stripe, Shopify, GitHub)
MAX_SECRET_CHARS: Final = 500
_SEALED_VERSION: Final = "v1."
_NONCE_BYTES: Final = 12


def needs_key(mode: str) -> bool:
    return mode != "signature"


def needs_signature(mode: str) -> bool:
    return mode != "key"


def generate() -> str:
    """A new secret in the Standard Webhooks format (`whsec_` + base64 of 32 random bytes);
    every scheme can use it (the others take its text as the HMAC key)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def hmac_key(scheme: str, secret: str) -> bytes:
    """The HMAC key a scheme makes of a secret. Standard Webhooks: the base64 after `whsec_`
    (a secret without the prefix is taken as its UTF-8 bytes); Stripe, Shopify and GitHub: the
    secret's text as UTF-8, as their documentation says."""
    if scheme == "standard" and secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    return secret.encode()


def check_secret(scheme: str, secret: str) -> str | None:
    """Why a secret someone supplied cannot be used with `scheme` (None: it can)."""
    if not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        return f"must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters"
    if not secret.isascii() or not secret.isprintable() or " " in secret:
        return "must be printable ASCII without spaces"
    if scheme == "standard":
        if not secret.startswith(SECRET_PREFIX):
            return f"a Standard Webhooks secret starts with {SECRET_PREFIX}"
        try:
            raw = hmac_key(scheme, secret)
        except (binascii.Error, ValueError):
            return f"the part after {SECRET_PREFIX} must be base64"
        if not 24 <= len(raw) <= 64:
            return f"the part after {SECRET_PREFIX} must decode to 24 to 64 bytes"
    return None


class SealError(ValueError):
    """A sealed secret that this key cannot open (another HOOKSTREAM_SECRETS_KEY, or altered)."""


class SecretBox:
    """Seals and opens signing secrets with AES-256-GCM. The key is derived (HKDF-SHA256) from
    the `HOOKSTREAM_SECRETS_KEY` text; the automation's id is the associated data, so a sealed
    secret copied onto another automation does not open."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("HOOKSTREAM_SECRETS_KEY is empty")
        derived = HKDF(algorithm=SHA256(), length=32, salt=None,
                       info=b"hookstream webhook signing secrets v1").derive(key.encode())
        self._aead = AESGCM(derived)

    def seal(self, secret: str, automation_id: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        box = self._aead.encrypt(nonce, secret.encode(), automation_id.encode())
        return _SEALED_VERSION + base64.urlsafe_b64encode(nonce + box).decode()

    def open(self, sealed: str, automation_id: str) -> str:
        if not sealed.startswith(_SEALED_VERSION):
            raise SealError("not a sealed secret of a version this code knows")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_SEALED_VERSION):])
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                       automation_id.encode())
        except (binascii.Error, ValueError, InvalidTag):
            raise SealError("the sealed secret does not open with this key") from None
        return plain.decode()
