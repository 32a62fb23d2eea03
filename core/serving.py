"""One way every service serves `/metrics` and its probes: Starlette routes, and a small
server for the processes whose main job is not HTTP (the worker, the notifier).

- `GET /healthz`: liveness. 200 while the process's event loop answers; an orchestrator
  restarts a process only when this fails. A rebalance or a broker outage is not a reason to
  restart, so no dependency is checked here.
- `GET /readyz`: readiness. 200 when every check passes, else 503 with `Retry-After`; the
  body names each check, so an operator sees which one holds the service back.
- `GET /metrics`: Prometheus text from the process's registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from core.tasks import cancel_and_wait

log = logging.getLogger(__name__)



class Failed(str):
    """A failing readiness check that says why (`/readyz` puts the text under `reasons`)."""

    def __bool__(self) -> bool:
        return False


Checks = Mapping[str, bool | Failed]
ReadyCheck = Callable[[], Checks | Awaitable[Checks]]

_JSON = "application/json"
LIVE_BODY = b'{"status":"ok"}'


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON, headers=headers)


async def readiness(check: ReadyCheck) -> Response:
    """The `/readyz` answer for the checks `check` returns (sync or async); a check that is a
    `Failed` puts its reason in the 503's `detail` and `reasons`."""
    result = check()
    got = dict(await result if inspect.isawaitable(result) else result)
    checks = {name: bool(ok) for name, ok in got.items()}
    if all(checks.values()):
        return json_response(200, {"status": "ready", "ready": True, "checks": checks})
    reasons = {name: str(ok) for name, ok in got.items() if isinstance(ok, Failed)}
    failing = ", ".join(f"{name} ({reasons[name]})" if name in reasons else name
                        for name, ok in checks.items() if not ok)
    body = {"status": "unavailable", "ready": False, "checks": checks,
            "error": "not_ready", "detail": f"not ready: {failing}"}
    if reasons:
        body["reasons"] = reasons
    return json_response(503, body, {"Retry-After": "1"})


def probe_routes(ready: ReadyCheck, *, extra: Callable[[], Mapping[str, Any]] | None = None,
                 registry: CollectorRegistry = REGISTRY) -> list[BaseRoute]:
    """`/healthz`, `/readyz` and `/metrics`, to add to any Starlette (or FastAPI) router.

    `extra` adds fields to the ready answer's body (say, a count of pending publishes).
    """

    async def healthz(_: Request) -> Response:
        return Response(LIVE_BODY, media_type=_JSON)

    async def readyz(_: Request) -> Response:
        response = await readiness(ready)
        if extra is not None and response.status_code == 200:
            body = orjson.loads(response.body)
            body.update(extra())
            return json_response(200, body)
        return response

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", healthz, methods=["GET", "HEAD"], include_in_schema=False),
            Route("/readyz", readyz, methods=["GET", "HEAD"], include_in_schema=False),
            Route("/metrics", metrics, methods=["GET", "HEAD"], include_in_schema=False)]


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a loop it does not own: signals stay with the process's owner.

    `Server.serve` swaps SIGINT/SIGTERM for its own handlers while it runs (uvicorn >= 0.29:
    `capture_signals`; before: `install_signal_handlers`), so a SIGTERM would stop the probes
    before the service and be raised again afterwards."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:
        """Older uvicorn's hook: nothing to install (see the class)."""


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or OSError naming the address. Bound here and not by
    uvicorn, which calls sys.exit on a bind failure (a SystemExit out of the event loop)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(exc.errno, f"cannot serve probes on {host}:{port}: {why}") from exc


class ProbeServer:
    """Serves `probe_routes` on host:port inside the running event loop (uvicorn, no signal
    handlers of its own: the process's owner handles SIGTERM)."""

    def __init__(self, host: str, port: int, ready: ReadyCheck, *,
                 routes: Sequence[BaseRoute] = (), name: str = "service",
                 registry: CollectorRegistry = REGISTRY) -> None:
        app = Starlette(routes=[*probe_routes(ready, registry=registry), *routes])
        config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                access_log=False, lifespan="off")
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self.name = name
        self.host, self.port = host, port

    async def start(self) -> None:
        """Listen, or raise OSError (say, the port is taken) with the address in its text."""
        sock = _listen(self.host, self.port)
        self.port = sock.getsockname()[1]  # port 0: the one the system chose
        self._server.should_exit = False
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]),
                                         name=f"{self.name}-probes")
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # raise what stopped it
                raise RuntimeError(f"{self.name}: the probe server ended before it started")
            await asyncio.sleep(0.01)
        log.info("%s: /metrics, /healthz and /readyz on http://%s:%d", self.name, self.host,
                 self.port)

    async def stop(self) -> None:
        if self._task is None:
            return
        task, self._task = self._task, None
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), 5)
        except TimeoutError:
            log.warning("%s: the probe server did not stop within 5 s; cancelled", self.name)
            await cancel_and_wait(task)
