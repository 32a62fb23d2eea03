"""The notifier's own small HTTP endpoint: `GET /metrics` (Prometheus) and `GET /healthz`.

aiohttp (already here with Faust) on the notifier's event loop; `handle_signals=False` leaves
signal handling to the notifier's own shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

Health = Callable[[], dict[str, bool]]
_METRICS_TYPE = CONTENT_TYPE_LATEST.split(";")[0]  # aiohttp wants the charset apart


class HealthServer:
    def __init__(self, host: str, port: int, health: Health) -> None:
        self.host = host
        self.port = port
        self.health = health
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("notifier metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), content_type=_METRICS_TYPE)

    async def _healthz(self, _: web.Request) -> web.Response:
        checks = self.health()
        ok = all(checks.values())
        return web.json_response({"status": "ok" if ok else "unavailable", "checks": checks},
                                 status=200 if ok else 503)
