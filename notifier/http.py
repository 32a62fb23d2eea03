"""The notifier's own small HTTP endpoint: `GET /metrics` (Prometheus) and `GET /healthz`.

A few lines on asyncio streams rather than a web framework: two read-only routes, and no
server that would take over the process's signal handling.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

Health = Callable[[], dict[str, bool]]


class HealthServer:
    def __init__(self, host: str, port: int, health: Health) -> None:
        self.host = host
        self.port = port
        self.health = health
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        log.info("notifier metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5.0)
            while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing here needs them
            parts = request_line.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            if method not in ("GET", "HEAD"):
                status, ctype, body = "405 Method Not Allowed", "application/json", \
                    b'{"error":"method_not_allowed","detail":"Only GET is served here."}'
            elif path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest()
            elif path == "/healthz":
                checks = self.health()
                ok = all(checks.values())
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype = "application/json"
                body = json.dumps({"status": "ok" if ok else "unavailable",
                                   "checks": checks}).encode()
            else:
                status, ctype, body = "404 Not Found", "application/json", \
                    b'{"error":"not_found","detail":"Try /metrics or /healthz."}'
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            writer.write(head if method == "HEAD" else head + body)
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("metrics request dropped: %s", exc)
        finally:
            writer.close()
