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
              rsgi=serves_rsgi(server, s.ingress_interface),
              max_connections=s.ingress_max_connections)


def serves_rsgi(server: Server, interface: str) -> bool:
    """Whether `serve` hands requests over RSGI: HOOKSTREAM_INGRESS_INTERFACE=rsgi, which
    only granian speaks (uvicorn serves ASGI)."""
    return server is Server.granian and interface == "rsgi"


APP = "ingress.asgi:app_from_env"
RSGI_APP = "ingress.rsgi:app_from_env"


# The kernel's accept queue (capped by net.core.somaxconn): room for a burst of new
# connections while the server takes them in.
BACKLOG = 4096
# Descriptors a process keeps for everything but client connections (Kafka, SQLite, logs).
RESERVED_FILES = 256


def serve(host: str, port: int, server: Server = Server.granian, app: str | None = None,
          workers: int = 1, rsgi: bool = False, max_connections: int = 16_384) -> None:
    """Serve `app` (an import string naming an app factory; default the ingress's) as the
    ingress is served: in `workers` processes sharing the listening socket (the kernel
    spreads connections), each building its own app (and Kafka producer) from the factory.
    `rsgi`: the factory builds an RSGI app (granian only), else an ASGI one.
    `max_connections`: open connections per process (HOOKSTREAM_INGRESS_MAX_CONNECTIONS)."""
    if app is None:
        app = RSGI_APP if rsgi else APP
    max_connections = fit_open_files(max_connections)
    if server is Server.granian:
        from granian import Granian
        from granian.constants import Interfaces, Loops

        # granian holds a `backpressure` slot per open connection, idle keep-alive ones
        # too, and takes no new connection while none is free (its default: 1,024 shared
        # by the workers).
        Granian(app, factory=True, address=host, port=port,
                interface=Interfaces.RSGI if rsgi else Interfaces.ASGI, workers=workers,
                loop=Loops.uvloop, log_access=False, workers_kill_timeout=15,
                backlog=BACKLOG, backpressure=max_connections).serve()
    else:
        import uvicorn

        # uvicorn sets no cap of its own on connections (its `limit_concurrency` would answer
        # a bare 503 past it): the open-files limit is the one that applies.
        uvicorn.run(app, factory=True, host=host, port=port, workers=workers,
                    loop="uvloop", http="httptools", access_log=False, log_level="warning",
                    timeout_graceful_shutdown=10, backlog=BACKLOG)


def fit_open_files(max_connections: int) -> int:
    """Raise this process's soft open-files limit so `max_connections` client sockets fit
    (the server's worker processes inherit it); if the hard limit does not allow that,
    return the connections that do fit, and say so."""
    import logging
    import resource

    want = max_connections + RESERVED_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new_soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        soft = new_soft
    if soft != resource.RLIM_INFINITY and soft < want:
        fits = max(64, soft - RESERVED_FILES)
        logging.getLogger(__name__).warning(
            "the open-files limit (%d) leaves room for %d client connections, not the %d "
            "of HOOKSTREAM_INGRESS_MAX_CONNECTIONS: raise the hard limit (ulimit -Hn)",
            soft, fits, max_connections)
        return fits
    return max_connections
