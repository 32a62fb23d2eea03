"""`hookstream ingress`: serve the webhook ingress (default 127.0.0.1:8080)."""

from __future__ import annotations

import enum

import typer


class Server(enum.StrEnum):
    granian = "granian"
    uvicorn = "uvicorn"


def register(app: typer.Typer) -> None:
    @app.command("ingress")
    def ingress(
        host: str | None = typer.Option(None, help="Address (default HOOKSTREAM_INGRESS_HOST)"),
        port: int | None = typer.Option(None, help="Port (default HOOKSTREAM_INGRESS_PORT)"),
        server: Server = typer.Option(Server.granian, help="HTTP server: granian (faster "
                                      "here, see bench/ingress.py) or uvicorn"),
        workers: int | None = typer.Option(None, min=1, help="Server processes (default "
                                           "HOOKSTREAM_INGRESS_WORKERS)"),
    ) -> None:
        """Serve POST /v1/hooks/{id}: authenticate, bound, publish to Kafka, answer 202.

        Stops gracefully on SIGINT/SIGTERM: open requests finish and the producer is flushed.
        """
        from core.settings import default_token_refusal, get_settings

        s = get_settings()
        host = host or s.ingress_host
        refusal = default_token_refusal(s, host, "ingress")
        if refusal:
            typer.secho(f"error: {refusal}", fg="red", err=True)
            raise typer.Exit(2)
        workers = workers or s.ingress_workers
        if workers > 1 and s.ingress_metrics_port is None:
            # On the public address a scrape would reach one worker, chosen by the kernel.
            typer.secho("error: more than one ingress worker needs HOOKSTREAM_INGRESS_METRICS_"
                        "PORT (each worker serves its own /metrics from that port on)",
                        fg="red", err=True)
            raise typer.Exit(2)
        serve(host, port or s.ingress_port, server, workers=workers,
              rsgi=serves_rsgi(server, s.ingress_interface))


def serves_rsgi(server: Server, interface: str) -> bool:
    """Whether `serve` hands requests over RSGI: HOOKSTREAM_INGRESS_INTERFACE=rsgi, which
    only granian speaks (uvicorn serves ASGI)."""
    return server is Server.granian and interface == "rsgi"


APP = "ingress.asgi:app_from_env"
RSGI_APP = "ingress.rsgi:app_from_env"


def serve(host: str, port: int, server: Server = Server.granian, app: str | None = None,
          workers: int = 1, rsgi: bool = False) -> None:
    """Serve `app` (an import string naming an app factory; default the ingress's) as the
    ingress is served: in `workers` processes sharing the listening socket (the kernel
    spreads connections), each building its own app (and Kafka producer) from the factory.
    `rsgi`: the factory builds an RSGI app (granian only), else an ASGI one."""
    if app is None:
        app = RSGI_APP if rsgi else APP
    if server is Server.granian:
        from granian import Granian
        from granian.constants import Interfaces, Loops

        Granian(app, factory=True, address=host, port=port,
                interface=Interfaces.RSGI if rsgi else Interfaces.ASGI, workers=workers,
                loop=Loops.uvloop, log_access=False, workers_kill_timeout=15).serve()
    else:
        import uvicorn

        uvicorn.run(app, factory=True, host=host, port=port, workers=workers,
                    loop="uvloop", http="httptools", access_log=False, log_level="warning",
                    timeout_graceful_shutdown=10)
