"""The ingress's OpenAPI 3.1 document, written by hand: the webhook routes are raw ASGI apps
(see `ingress.endpoint`), so there are no models to generate it from."""

from __future__ import annotations

from typing import Any

from core.settings import Settings
from ingress.errors import ERRORS

_JSON = "application/json"
_NDJSON = "application/x-ndjson"
_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"
# A form is one record of text fields; bracketed names nest (`data[merges][FNAME]`).
_FORM_SCHEMA = {"type": "object", "minProperties": 1,
                "additionalProperties": {"oneOf": [
                    {"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}


def _error(*codes: str) -> dict[str, Any]:
    return {
        "description": "; ".join(f"`{c}`: {ERRORS[c][1]}" for c in codes),
        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"},
                            "examples": {c: {"value": {"error": c, "detail": ERRORS[c][1]}}
                                         for c in codes}}},
    }


def _with_retry(resp: dict[str, Any]) -> dict[str, Any]:
    return {**resp, "headers": {"Retry-After": {
        "description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}}


def build_openapi(settings: Settings) -> dict[str, Any]:
    auth = [{"apiKey": []}, {"bearer": []}]
    path_param = {"name": "automation_id", "in": "path", "required": True,
                  "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
                  "description": "The automation's id, from its webhook URL"}
    idem = {"name": "Idempotency-Key", "in": "header", "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            "description": "A retried request with the same key (and automation) within "
                           f"{settings.idempotency_window_seconds:.0f} s is answered as the "
                           "first and published once."}
    # Signed webhooks (an automation whose authentication mode is signature or both).
    signed = [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
         "description": f"Standard Webhooks: {what}. Stripe-Signature, X-Shopify-Hmac-Sha256 "
                        "or X-Hub-Signature-256 instead for those schemes."}
        for name, what in (
            ("webhook-id", "the delivery's id (a replay within the window is answered as "
                           "the first and published once)"),
            ("webhook-timestamp", "Unix seconds; more than "
                                  f"{settings.signature_tolerance_seconds:.0f} s from the "
                                  "ingress's clock is refused"),
            ("webhook-signature", "v1,<base64 HMAC-SHA256 of id.timestamp.body>, several "
                                  "separated by spaces while a secret rotates"))]
    body = {
        "required": True,
        "description": f"One object, an array of objects (a batch), or NDJSON; or one "
                       "record as a form (URL-encoded, or multipart with text fields only: a "
                       "file part is refused with 415), its bracketed names nested "
                       f"(`data[merges][FNAME]`) and its values texts; at most "
                       f"{settings.max_body_bytes} bytes (or the automation's own, "
                       "lower limit).",
        "content": {
            _JSON: {"schema": {"oneOf": [
                {"type": "object"}, {"type": "array", "items": {"type": "object"},
                                     "minItems": 1}]}},
            _NDJSON: {"schema": {"type": "string"}},
            _FORM: {"schema": _FORM_SCHEMA},
            _MULTIPART: {"schema": _FORM_SCHEMA},
        },
    }
    common_auth = {
        "401": _error("missing_api_key", "invalid_api_key", "missing_signature",
                      "invalid_signature", "timestamp_out_of_range"),
        "404": _error("unknown_automation"),
        "413": _error("body_too_large"),
        "415": _error("unsupported_media_type", "unsupported_content_encoding"),
        "503": _with_retry(_error("not_ready")),
    }
    body_400 = ("bad_json", "not_object", "bad_form", "empty_body", "too_deep",
                "number_out_of_range", "bad_content_encoding", "ambiguous_header")
    return {
        "openapi": "3.1.0",
        "info": {"title": "hookstream ingress", "version": "1",
                 "description": "Incoming webhooks: authenticated, bounded, stored on Kafka "
                                "before they are acknowledged."},
        "paths": {
            "/v1/hooks/{automation_id}": {"post": {
                "summary": "Send respondent data to an automation",
                "operationId": "sendWebhook",
                "security": auth,
                "parameters": [path_param, idem, *signed],
                "requestBody": body,
                "responses": {
                    "202": {"description": "Stored on Kafka (acknowledged by the broker)",
                            "content": {_JSON: {"schema": {
                                "$ref": "#/components/schemas/Accepted"}}}},
                    **common_auth,
                    "400": _error(*body_400, "invalid_idempotency_key"),
                    "409": _error("automation_disabled"),
                    "429": _with_retry(_error("rate_limited")),
                    "503": _with_retry(_error("kafka_unavailable", "not_ready")),
                },
            }},
            "/v1/hooks/{automation_id}/test": {"post": {
                "summary": "Test the connection, or dry-run a sample body (publishes nothing)",
                "operationId": "testWebhook",
                "security": auth,
                "parameters": [path_param, *signed],
                "requestBody": {**body, "required": False},
                "responses": {
                    "200": {"description": "The key works; with a body, the dry run",
                            "content": {_JSON: {"schema": {
                                "$ref": "#/components/schemas/TestResult"}}}},
                    **common_auth,
                    "400": _error(*body_400),
                    "413": _error("body_too_large", "too_many_records"),
                    "429": _with_retry(_error("rate_limited")),
                },
            }},
            "/healthz": {"get": {"summary": "The process runs", "operationId": "healthz",
                                 "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {
                "summary": "Ready: producer connected and configuration loaded",
                "operationId": "readyz",
                "responses": {"200": {"description": "ready"},
                              "503": {"description": "not ready (see checks)"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                                 "responses": {"200": {"description": "text exposition",
                                                       "content": {"text/plain": {}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error", "detail"],
                          "properties": {"error": {"type": "string", "enum": sorted(ERRORS)},
                                         "detail": {"type": "string"}}},
                "Accepted": {"type": "object", "required": ["event_id", "accepted"],
                             "properties": {"event_id": {"type": "string", "format": "uuid"},
                                            "accepted": {"type": "integer", "minimum": 1}}},
                "TestResult": {"type": "object", "required": ["ok", "automation"],
                               "properties": {
                                   "ok": {"type": "boolean"},
                                   "automation": {"type": "object", "properties": {
                                       "id": {"type": "string"}, "name": {"type": "string"},
                                       "enabled": {"type": "boolean"},
                                       "survey": {"type": "string"}}},
                                   "detail": {"type": "string"},
                                   "published": {"type": "boolean"},
                                   "dry_run": {"type": "object"}}},
            },
        },
    }
