"""The ingress on granian's RSGI interface (`HOOKSTREAM_INGRESS_INTERFACE=rsgi`, opt-in): the
webhook's POST straight to `Webhook`, every other request through a small ASGI adapter to the
same `IngressApp`.

Why: under ASGI, granian's hand-over of each request and answer (the scope dict, the
receive/send message dicts and their awaits) was the largest share of the ingress's Python
time (26% in bench/README.md's profile). RSGI hands over a scope object, one `await
proto()` for the body and one `response_bytes` call for the answer.

The ASGI app stays the reference: the webhook runs the same `Endpoint.reply` on both (only
the header and body hand-over differ), and tests/ingress/test_rsgi.py sends the same
requests, valid and invalid, to both and compares status, headers, body and Kafka record.

What RSGI cannot carry, and what the ingress then does:
- the raw request path: granian gives the path percent-decoded, so `{id}%2Ftest` cannot be
  told from `{id}/test`. The webhook's route is safe (a decoded path of its shape had no
  `%2F`); any other path under /v1/hooks/ whose request line held an encoded slash is not
  detectable, so the dry run is reached by `{id}%2Ftest` (it still needs that automation's
  key or signature) where ASGI answers 404 (tests/ingress/test_adversarial_corpus.py's
  "encoded slash to the dry run"). That is why ASGI stays the default.
- header values with bytes beyond ASCII: granian drops them (the name stays in
  `headers.keys()`); they reach the app as one non-ASCII byte (`DROPPED_VALUE`), which the
  checks refuse as they refuse any non-ASCII key (401 invalid_api_key, 400
  invalid_idempotency_key, 415 for a Content-Type or Content-Encoding). Only a value whose
  non-ASCII bytes ASGI would have let through differs (a Content-Type parameter, say).
"""

from __future__ import annotations

import asyncio
from typing import Any

from granian.rsgi import HTTPProtocol, ProtocolClosed, ProtocolError
from granian.rsgi import Scope as RsgiScope

from ingress import asgi
from ingress.app import IngressApp
from ingress.endpoint import JSON_HEADERS

_JSON_STR_HEADERS = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in JSON_HEADERS]


def _str_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """ASGI's header pairs as RSGI's (the webhook's usual answer's, converted once)."""
    if headers is JSON_HEADERS:
        return _JSON_STR_HEADERS
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


class _Receive:
    """ASGI's `receive` over an RSGI protocol: the whole body in one message when its length
    was declared (hyper reads exactly that many bytes), else chunk by chunk as it streams
    in (so the body limit still refuses a long chunked body early)."""

    __slots__ = ("_chunks", "_proto", "_whole")

    def __init__(self, proto: HTTPProtocol, whole: bool) -> None:
        self._proto = proto
        self._whole = whole
        self._chunks: Any = None

    async def __call__(self) -> dict[str, Any]:
        try:
            if self._whole:
                return {"type": "http.request", "body": await self._proto(), "more_body": False}
            if self._chunks is None:
                self._chunks = self._proto.__aiter__()
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunk, "more_body": True}
        except (ProtocolClosed, ProtocolError):
            return {"type": "http.disconnect"}


# What stands for a header value granian dropped (one with bytes beyond ASCII: hyper's
# parser refuses control characters, so only those remain): a non-ASCII byte, so the checks
# refuse it as they refuse the original (an API key or Idempotency-Key that is not ASCII).
DROPPED_VALUE = b"\x80"


def _asgi_headers(scope: RsgiScope) -> list[tuple[bytes, bytes]]:
    """The request's headers as ASGI's byte pairs. A value granian dropped (see
    `DROPPED_VALUE`) is there as that byte."""
    headers = scope.headers
    items = headers.items()
    pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in items]
    names = headers.keys()  # each name once, a dropped value's too
    if len(names) != len(pairs):  # a name repeated, or a value dropped
        seen = {k for k, _ in items}
        if len(names) > len(seen):
            pairs += [(k.encode("latin-1"), DROPPED_VALUE) for k in names if k not in seen]
    return pairs


class RsgiIngress:
    """`IngressApp` served over RSGI (granian's `Interfaces.RSGI`)."""

    def __init__(self, app: IngressApp) -> None:
        self.app = app
        self._webhook = app._webhook
        self._hook_path = app._hook_path

    # granian calls these on the worker's loop before serving and after the last request.
    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.app.startup())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.app.shutdown())

    async def __rsgi__(self, scope: RsgiScope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":  # websockets: not served (ASGI's router refuses them too)
            proto.close(403)  # type: ignore[attr-defined]
            return
        if scope.method == "POST":
            match = self._hook_path.match(scope.path)
            if match is not None:
                await self._hook(scope, proto, match["automation_id"])
                return
        await self._asgi(scope, proto)

    async def _hook(self, scope: RsgiScope, proto: HTTPProtocol, automation_id: str) -> None:
        receive = _Receive(proto, "content-length" in scope.headers)
        status, body, headers = await self._webhook.reply(
            {"headers": _asgi_headers(scope)}, receive, automation_id)
        proto.response_bytes(status, _str_headers(headers), body)

    async def _asgi(self, scope: RsgiScope, proto: HTTPProtocol) -> None:
        """Any other request, through the ASGI app (probes, metrics, dry run, OpenAPI, the
        router's 404/405): small answers, collected and sent at once."""
        host, _, port = scope.client.rpartition(":")
        server_host, _, server_port = scope.server.rpartition(":")
        asgi_scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": scope.http_version, "method": scope.method,
            "scheme": scope.scheme, "path": scope.path, "root_path": "",
            "query_string": scope.query_string.encode("latin-1"),
            "headers": _asgi_headers(scope),
            "client": (host, int(port or 0)), "server": (server_host, int(server_port or 0)),
            "state": {},
        }
        status = 500
        out_headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                out_headers = [(k.decode("latin-1"), v.decode("latin-1"))
                               for k, v in message.get("headers", ())]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        receive = _Receive(proto, "content-length" in scope.headers)
        await self.app(asgi_scope, receive, send)
        proto.response_bytes(status, out_headers, b"".join(chunks))


def app_from_env() -> RsgiIngress:
    """`ingress.rsgi:app_from_env`: the ingress (`ingress.asgi:app_from_env`) over RSGI."""
    return RsgiIngress(asgi.app_from_env())
