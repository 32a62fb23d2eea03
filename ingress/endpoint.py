"""What the two webhook routes share, on raw ASGI (each route is an ASGI app in the router).

One pass over the headers (`Head`), the authentication checks in their fixed order, the body
read once with the size limit enforced while it streams in, and the answers: precomputed
headers, orjson, errors as `{"error": CODE, "detail": SENTENCE}`.
"""

from __future__ import annotations

import zlib

from starlette.types import Receive, Scope, Send

from automations import signing
from automations.bodies import MAX_DEPTH, BodyError, media_type
from automations.config_cache import ConfigCache
from automations.snapshot import AutomationSnapshot
from ingress.errors import HttpError, error_body
from ingress.keys import KeyIndex
from ingress.metrics import UNKNOWN, IngressMetrics
from ingress.ratelimit import retry_after_header
from ingress.refusals import Refusals
from ingress.signatures import SIGNATURE_HEADERS, SignatureError, SigningIndex, verify

JSON_HEADERS = [(b"content-type", b"application/json")]
MAX_IDEMPOTENCY_KEY = 255
BODY_CODES = {"empty": "empty_body"}  # parse_body's codes -> the ingress's public ones
# A signed request's delivery id, as a key of the idempotency store: the prefix holds a
# control character, which no Idempotency-Key header may, so the two never collide.
SIGNED_ID_PREFIX = "\x1fsigned:"
GZIP_ENCODINGS = frozenset({b"gzip", b"x-gzip"})
IDENTITY_ENCODINGS = frozenset({b"", b"identity"})
# Headers a request must not repeat: which of two keys, signatures or body descriptions is
# meant is not for the ingress to guess (a proxy may have added one).
_ONCE = {b"x-api-key": "X-API-Key", b"authorization": "Authorization",
         b"content-type": "Content-Type", b"content-length": "Content-Length",
         b"content-encoding": "Content-Encoding", b"idempotency-key": "Idempotency-Key"}


def ambiguous(name: str) -> HttpError:
    return HttpError("ambiguous_header", f"The {name} header appears more than once; send it "
                     "once.")


def body_error(exc: BodyError, code: str | None = None) -> HttpError:
    """A `BodyError` as the ingress answers it (its detail as a sentence)."""
    return HttpError(code or BODY_CODES.get(exc.code, exc.code),
                     exc.detail[:1].upper() + exc.detail[1:] + ".")


async def respond(send: Send, status: int, body: bytes,
                  headers: list[tuple[bytes, bytes]] = JSON_HEADERS) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Head:
    """What a webhook request's headers said, read in one pass."""

    __slots__ = ("api_key", "automation_id", "content_encoding", "content_length",
                 "content_type", "enabled_unchecked", "idempotency_key", "idempotency_raw",
                 "replay_key", "signed", "snapshot")

    def __init__(self, automation_id: str) -> None:
        self.automation_id = automation_id
        self.api_key: bytes | None = None
        self.content_type: bytes | None = None
        self.content_length: bytes | None = None
        self.content_encoding: bytes | None = None
        self.idempotency_raw: bytes | None = None
        self.idempotency_key: str | None = None
        self.snapshot: AutomationSnapshot | None = None
        # Signed webhooks: the signature headers seen (None: none), the verified delivery id
        # as an idempotency-store key, and whether the 409 check waits for the signature.
        self.signed: dict[bytes, bytes] | None = None
        self.replay_key: str | None = None
        self.enabled_unchecked = False

    @property
    def dedupe_key(self) -> str | None:
        """The key this request is remembered under: the signed delivery id, else the
        Idempotency-Key header."""
        return self.replay_key or self.idempotency_key

    @property
    def content_type_str(self) -> str | None:
        return None if self.content_type is None else self.content_type.decode("latin-1")

    @property
    def key_bytes(self) -> bytes:
        return self.automation_id.encode()


def too_large_detail(limit: int, own: bool = False) -> str:
    whose = "this automation's limit" if own else "the limit"
    return f"The body is larger than {whose} of {limit} bytes; send fewer records per request."


class Endpoint:
    """An ASGI app for `/v1/hooks/{automation_id}...`: `handle` answers or raises `HttpError`.

    The router has checked the method (POST) already; everything after is checked here, in
    this order: configuration loaded (503 not_ready) -> a key or a signature is given (401)
    -> the automation exists (404) -> the key opens it (401, unless the automation takes
    signatures only) -> enabled, where required (409) -> media type (415) -> declared size
    (413) -> body read within the limit (413) -> the signature, where the automation requires
    one (401; `check_signature`). An automation that takes signatures only says whether it is
    enabled (409) only after the signature proved the sender.
    """

    route: str  # the route's path template: its `route` label in the metrics

    def __init__(self, *, cache: ConfigCache, keys: KeyIndex, metrics: IngressMetrics,
                 max_body: int, signing_index: SigningIndex | None = None,
                 tolerance: float = 300.0, refusals: Refusals | None = None,
                 max_depth: int = MAX_DEPTH) -> None:
        self.cache = cache
        self.max_depth = max_depth
        self.keys = keys
        self.metrics = metrics
        self.max_body = max_body
        self.signing = signing_index
        self.tolerance = tolerance
        self.refusals = refusals
        self._too_large = too_large_detail(max_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, body, headers = await self.reply(scope, receive,
                                                 scope["path_params"]["automation_id"])
        await respond(send, status, body, headers)

    async def reply(self, scope: Scope, receive: Receive,
                    automation_id: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """The answer to one request (status, body, headers but Content-Length), counted in
        the metrics: what ASGI (`__call__`) and RSGI (`ingress.rsgi`) send."""
        try:
            status, body = await self.handle(scope, receive, automation_id)
        except HttpError as err:
            return self.refuse(self.label(automation_id), err)
        self.metrics.request(self.route, status)
        return status, body, JSON_HEADERS

    async def handle(self, scope: Scope, receive: Receive,
                     automation_id: str) -> tuple[int, bytes]:
        raise NotImplementedError

    def label(self, automation_id: str) -> str:
        """The metrics label of a request's automation: its id only when it exists (an id in
        a URL is unauthenticated: labelling made-up ids would grow the metrics without
        bound), else `UNKNOWN`."""
        return automation_id if self.cache.get(automation_id) is not None else UNKNOWN

    async def error(self, send: Send, automation: str, err: HttpError) -> None:
        status, body, headers = self.refuse(automation, err)
        await respond(send, status, body, headers)

    def refuse(self, automation: str,
               err: HttpError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """The error answer to `err`, counted (metrics, refusal reports)."""
        headers = JSON_HEADERS
        if err.retry_after is not None:
            headers = [*JSON_HEADERS, (b"retry-after", retry_after_header(err.retry_after))]
        self.metrics.request(self.route, err.status)
        self.metrics.reject(automation, err.code)
        if self.refusals is not None:
            self.refusals.count(automation, err)
        return err.status, error_body(err.code, err.detail), headers

    def authenticate(self, scope: Scope, automation_id: str, *, require_enabled: bool) -> Head:
        head = Head(automation_id)
        authorization = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                if head.api_key is not None:
                    raise ambiguous(_ONCE[name])
                head.api_key = value
            elif name == b"authorization":
                if authorization is not None:
                    raise ambiguous(_ONCE[name])
                authorization = value
            elif name == b"content-type":
                if head.content_type is not None:
                    raise ambiguous(_ONCE[name])
                head.content_type = value
            elif name == b"content-length":
                if head.content_length is not None:
                    raise ambiguous(_ONCE[name])
                head.content_length = value
            elif name == b"content-encoding":
                if head.content_encoding is not None:
                    raise ambiguous(_ONCE[name])
                head.content_encoding = value
            elif name == b"idempotency-key":
                if head.idempotency_raw is not None:
                    raise ambiguous(_ONCE[name])
                head.idempotency_raw = value
            elif name in SIGNATURE_HEADERS:
                if head.signed is None:
                    head.signed = {}
                elif name in head.signed:
                    raise ambiguous(name.decode("latin-1"))
                head.signed[name] = value
        if not self.cache.ready.is_set():
            raise HttpError("not_ready", retry_after=1.0)
        if authorization is not None:
            scheme, _, token = authorization.partition(b" ")
            if head.api_key is not None:
                # Both: fine when they agree (or Authorization is for something else, say a
                # proxy's Basic); two different keys are not for the ingress to choose from.
                if scheme.lower() == b"bearer" and token.strip() != head.api_key:
                    raise HttpError("ambiguous_header", "X-API-Key and 'Authorization: "
                                    "Bearer' name different keys; send one.")
            elif scheme.lower() == b"bearer" and token.strip():
                head.api_key = token.strip()
            else:
                raise HttpError("missing_api_key", "The Authorization header must be "
                                "'Bearer KEY'; or send the key in X-API-Key.")
        if not head.api_key and head.signed is None:
            snapshot = self.cache.get(automation_id)
            if snapshot is not None and not signing.needs_key(snapshot.auth_mode):
                raise HttpError("missing_signature")
            raise HttpError("missing_api_key")
        snapshot = self.cache.get(automation_id)
        if snapshot is None:
            raise HttpError("unknown_automation")
        if signing.needs_key(snapshot.auth_mode):
            if not head.api_key:
                raise HttpError("missing_api_key")
            if not self.keys.check(automation_id, head.api_key.decode("latin-1")):
                raise HttpError("invalid_api_key")
        head.snapshot = snapshot
        if require_enabled:
            if snapshot.auth_mode == "signature":
                head.enabled_unchecked = True  # told only to a sender the signature proved
            else:
                self.check_enabled(snapshot)
        if head.idempotency_raw is not None:
            raw = head.idempotency_raw
            if not 0 < len(raw) <= MAX_IDEMPOTENCY_KEY or not raw.isascii() or any(
                    c < 0x20 or c == 0x7F for c in raw):
                raise HttpError("invalid_idempotency_key")
            head.idempotency_key = raw.decode("ascii")
        return head

    @staticmethod
    def check_enabled(snapshot: AutomationSnapshot) -> None:
        if not snapshot.enabled:
            detail = None
            if snapshot.disabled_reason:
                detail = (f"This automation is disabled ({snapshot.disabled_reason[:200]}); "
                          "enable it in the control plane to send it data.")
            raise HttpError("automation_disabled", detail)

    def check_signature(self, head: Head, body: bytes) -> None:
        """For an automation that requires signed requests: a signature of `body` (the raw
        bytes received) under one of its current secrets (401 otherwise); then the deferred
        409. The verified delivery id becomes the request's idempotency key."""
        snapshot = head.snapshot
        assert snapshot is not None
        if not signing.needs_signature(snapshot.auth_mode):
            return
        keys = self.signing.keys(head.automation_id) if self.signing is not None else []
        try:
            delivery_id = verify(snapshot.signature_scheme, head.signed or {}, body, keys,
                                 tolerance=self.tolerance)
        except SignatureError as exc:
            raise HttpError(exc.code, exc.detail) from None
        if delivery_id is not None:
            head.replay_key = SIGNED_ID_PREFIX + delivery_id
        if head.enabled_unchecked:
            self.check_enabled(snapshot)

    async def read_body(self, receive: Receive, head: Head) -> bytes:
        """The whole body, refusing (413) as soon as it is known to exceed the limit; a gzip
        body decoded (its decoded size within the same limit)."""
        if head.content_type is not None:
            try:
                media_type(head.content_type_str)
            except BodyError as exc:
                raise body_error(exc, "unsupported_media_type") from None
        encoding = head.content_encoding
        if encoding is not None:
            encoding = encoding.strip().lower()
            if encoding not in GZIP_ENCODINGS and encoding not in IDENTITY_ENCODINGS:
                raise HttpError("unsupported_content_encoding")
        body = await self._read_raw(receive, head)
        if encoding in GZIP_ENCODINGS:
            return self.gunzip(body, head)
        return body

    @staticmethod
    async def _drain(receive: Receive, message: dict[str, object], budget: int) -> None:
        """Read and drop the rest of a refused streamed body, up to `budget` bytes: a server
        that closes on unread bytes resets the connection, and the client then never reads
        its 413 (seen with chunked bodies). Beyond the budget the client is on its own."""
        while message.get("more_body", False) and budget > 0:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            budget -= len(message.get("body", b""))  # type: ignore[arg-type]

    def body_limit(self, head: Head) -> tuple[int, str]:
        """The automation's own body limit (never above the global one, which the topics are
        sized for) and its 413 detail; else the global limit."""
        own = head.snapshot.max_body_bytes if head.snapshot is not None else None
        if own is None or own >= self.max_body:
            return self.max_body, self._too_large
        return own, too_large_detail(own, own=True)

    def gunzip(self, data: bytes, head: Head | None = None) -> bytes:
        """A gzip body decoded, one member after another, never past the body limit (a
        "gzip bomb" costs at most `max_body` bytes of output): 413 beyond it, 400 for bytes
        that are not (complete) gzip."""
        limit, too_large = (self.max_body, self._too_large) if head is None \
            else self.body_limit(head)
        out: list[bytes] = []
        size = 0
        rest = data
        if not rest:
            raise HttpError("bad_content_encoding", "The body is labelled gzip but is empty.")
        while rest:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                chunk = inflater.decompress(rest, limit - size + 1)
            except zlib.error:
                raise HttpError("bad_content_encoding", "The body is labelled gzip but is not "
                                "valid gzip.") from None
            size += len(chunk)
            if size > limit or inflater.unconsumed_tail:
                raise HttpError("body_too_large", too_large + " (decoded from gzip)")
            if not inflater.eof:
                raise HttpError("bad_content_encoding", "The gzip body ends before its end "
                                "marker (truncated).")
            out.append(chunk)
            rest = inflater.unused_data
        return b"".join(out)

    async def _read_raw(self, receive: Receive, head: Head) -> bytes:
        limit, too_large = self.body_limit(head)
        if head.content_length is not None:
            try:
                declared = int(head.content_length)
            except ValueError:
                declared = -1
            if declared > limit:
                raise HttpError("body_too_large", too_large)
        message = await receive()
        chunk: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(chunk) > limit:
                raise HttpError("body_too_large", too_large)
            return chunk
        chunks = [chunk]
        size = len(chunk)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError("empty_body", "The client went away before the body was "
                                "complete.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._drain(receive, message, 4 * limit)
                raise HttpError("body_too_large", too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
