"""`hookstream worker`: the streams worker (raw processor and scheduler) in a Faust worker."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        loglevel: str = typer.Option("info", help="crit|error|warn|info|debug"),
        host: str = typer.Option("127.0.0.1", help="Address /metrics and /healthz bind to "
                                 "(the port is HOOKSTREAM_WORKER_PORT)"),
    ) -> None:
        """Run the streams worker: webhooks.raw to invitations, and the delay scheduler."""
        from streams.app import run_worker

        run_worker(loglevel=loglevel, host=host)
