"""The baseline of `bench/ingress.py`: the real ingress app whose publisher answers at once.

Everything but Kafka is the real thing: the same app (`ingress.app.create_app`), settings,
server and server options (`ingress.cli.serve`), so the ratio against it is the cost of
publishing alone. It lives here, not in the ingress, so no production entry point has a
switch that answers 202 without storing anything.

    python -m bench.ingress_baseline --port PORT [--server granian|uvicorn]   (from the root)
"""

from __future__ import annotations

import argparse
import logging

from core.settings import get_settings
from ingress.app import IngressApp, create_app
from ingress.asgi import configure_logging
from ingress.cli import Server, serve, serves_rsgi
from ingress.publishing import Headers
from ingress.rsgi import RsgiIngress

log = logging.getLogger(__name__)


class NullPublisher:
    """A `Publisher` that answers at once without publishing."""

    ready = True

    async def start(self) -> None:
        log.warning("publishing is DISABLED (benchmark baseline): nothing reaches Kafka")

    async def stop(self) -> None:
        return None

    async def probe(self) -> bool:
        return True

    async def publish(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        return None


def app_from_env() -> IngressApp:
    """As `ingress.asgi:app_from_env`, with the `NullPublisher`."""
    settings = get_settings()
    configure_logging(settings)
    return create_app(settings, publisher=NullPublisher())


def rsgi_app_from_env() -> RsgiIngress:
    """The same, over RSGI (`HOOKSTREAM_INGRESS_INTERFACE=rsgi`, as the ingress)."""
    return RsgiIngress(app_from_env())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", type=Server, choices=list(Server), default=Server.granian)
    args = parser.parse_args()
    # Imported by the server's worker from the working directory (the repository's root).
    settings = get_settings()
    rsgi = serves_rsgi(args.server, settings.ingress_interface)
    app = "bench.ingress_baseline:" + ("rsgi_app_from_env" if rsgi else "app_from_env")
    serve(args.host, args.port, args.server, app=app, workers=settings.ingress_workers,
          rsgi=rsgi, max_connections=settings.ingress_max_connections)


if __name__ == "__main__":
    main()
