"""The ingress's error answers: a machine code, its HTTP status and a default sentence.

Every error body is `{"error": CODE, "detail": SENTENCE}`; the sentence is for a person and
never repeats the API key or respondent data.
"""

from __future__ import annotations

import orjson

# The 503 of a publish: Kafka did not acknowledge in time, which does not mean it will not
# store the record later (docs/DESIGN.md, "What a 503 means").
KAFKA_UNAVAILABLE = ("Kafka did not acknowledge the event in time: it may or may not have been "
                     "accepted. Retry after Retry-After seconds with the same Idempotency-Key "
                     "(a retry with the same key never invites twice; one without a key may).")

# code -> (status, default detail)
ERRORS: dict[str, tuple[int, str]] = {
    "bad_json": (400, "The body is not valid JSON."),
    "not_object": (400, "The body must be a JSON object, an array of objects, or NDJSON "
                   "with one object per line."),
    "bad_form": (400, "The form body cannot be read (bad percent-encoding, bad bytes for its "
                 "charset, a malformed multipart body, or field names that conflict)."),
    "too_deep": (400, "The body nests objects and arrays deeper than the limit."),
    "number_out_of_range": (400, "The body holds a number that cannot be kept exactly (an "
                            "integer outside the 64-bit range, or a decimal that would become "
                            "infinity or zero); send it as a JSON string."),
    "bad_content_encoding": (400, "The body is not valid for its Content-Encoding (gzip)."),
    "ambiguous_header": (400, "A header that must appear once appears more than once "
                         "(X-API-Key, Authorization, a signature header, Content-Type, "
                         "Content-Length, Content-Encoding or Idempotency-Key), or X-API-Key "
                         "and 'Authorization: Bearer' name different keys."),
    "empty_body": (400, "The body is empty; send one JSON object, an array of objects, or "
                   "NDJSON."),
    "invalid_idempotency_key": (400, "The Idempotency-Key header must be 1 to 255 printable "
                                "ASCII characters."),
    "missing_api_key": (401, "No API key: send it in the X-API-Key header or as "
                        "'Authorization: Bearer KEY'."),
    "invalid_api_key": (401, "The API key is not valid for this automation (wrong, rotated "
                        "out, or belonging to another automation)."),
    "missing_signature": (401, "This automation requires signed requests; send the "
                          "signature headers of its scheme."),
    "invalid_signature": (401, "No signature matches the body with this automation's signing "
                          "secret."),
    "timestamp_out_of_range": (401, "The signed timestamp is too far from the ingress's clock; "
                               "sign the request anew."),
    "unknown_automation": (404, "There is no automation with this id."),
    "not_found": (404, "There is nothing at this address."),
    "method_not_allowed": (405, "This method is not allowed here."),
    "automation_disabled": (409, "This automation is disabled; enable it in the control "
                            "plane to send it data."),
    "body_too_large": (413, "The body is larger than the limit."),
    "too_many_records": (413, "The dry run takes fewer records; send a smaller sample."),
    "unsupported_media_type": (415, "Send Content-Type application/json, "
                               "application/x-ndjson, application/x-www-form-urlencoded or "
                               "multipart/form-data (text fields only, no files)."),
    "unsupported_content_encoding": (415, "Send the body unencoded or with Content-Encoding "
                                     "gzip."),
    "rate_limited": (429, "Too many requests for this automation; retry after the number of "
                     "seconds in Retry-After."),
    "kafka_unavailable": (503, KAFKA_UNAVAILABLE),
    "not_ready": (503, "The ingress is starting and has not loaded its configuration yet; "
                  "retry after Retry-After seconds."),
}


def error_body(code: str, detail: str | None = None) -> bytes:
    return orjson.dumps({"error": code, "detail": detail or ERRORS[code][1]})


class HttpError(Exception):
    """An answer other than success, raised anywhere in a handler."""

    def __init__(self, code: str, detail: str | None = None, *,
                 retry_after: float | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.status = ERRORS[code][0]
        self.detail = detail
        self.retry_after = retry_after
