"""`hookstream worker`: the streams worker (raw processor and scheduler) in a Faust worker."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        loglevel: str = typer.Option("info", help="crit|error|warn|info|debug"),
        host: str | None = typer.Option(None, help="Address /metrics, /healthz and /readyz "
                                        "bind to (default HOOKSTREAM_METRICS_HOST; the port is "
                                        "HOOKSTREAM_WORKER_PORT)"),
    ) -> None:
        """Run the streams worker: webhooks.raw to invitations, and the delay scheduler."""
        from streams.app import run_worker

        run_worker(loglevel=loglevel, host=host)
