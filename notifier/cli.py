"""`hookstream notifier` (invitations and alerts over SMTP) and `hookstream smtp-sink`."""

from __future__ import annotations

import logging
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("notifier")
    def notifier(
        log_level: str = typer.Option("info", help="debug, info, warning or error"),
    ) -> None:
        """Consume invitations.due and mail each invitation once; consume automations.errors
        and mail grouped alerts; disable automations that keep failing.

        SMTP from HOOKSTREAM_SMTP_URL (smtp://user:pass@host:587?starttls=1, smtps://...);
        /metrics and /healthz on HOOKSTREAM_NOTIFIER_PORT. Stops cleanly on SIGINT/SIGTERM.
        """
        import asyncio

        from core.settings import get_settings
        from notifier.app import run
        from notifier.smtp_config import SmtpUrlError

        logging.basicConfig(level=log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            _install_uvloop()  # a third less CPU per mail (bench/notifier.py)
            asyncio.run(run(get_settings()))
        except SmtpUrlError as exc:
            typer.secho(f"error: HOOKSTREAM_SMTP_URL: {exc}", fg="red", err=True)
            raise typer.Exit(2) from exc

    @app.command("smtp-sink")
    def smtp_sink(
        folder: Path = typer.Option(Path("var/mail"), "--dir", help="Where .eml files go"),
        host: str = typer.Option("127.0.0.1", help="Address to listen on"),
        port: int | None = typer.Option(None, help="Port (default: the port of "
                                        "HOOKSTREAM_SMTP_URL, 8025 out of the box)"),
    ) -> None:
        """A local SMTP server that writes every mail it receives as an .eml file."""
        import signal
        import threading

        from core.settings import get_settings
        from hookstream.local.smtp_sink import SmtpSink
        from notifier.smtp_config import SmtpConfig

        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # aiosmtpd logs every command at INFO, recipients' addresses included: personal data
        # in a log, and a tenth of the sink's CPU per mail (py-spy). The .eml files are the
        # record; warnings still show.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        if port is None:
            port = SmtpConfig.from_url(get_settings().smtp_url.get_secret_value()).port
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        sink = SmtpSink(folder, host=host, port=port).start()
        typer.echo(f"SMTP sink on {host}:{port}, writing to {folder}/ (Ctrl-C stops)",
                   err=True)
        try:
            while not stop.wait(0.5):  # a timed wait lets the signal handlers run
                pass
        finally:
            sink.stop()


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        logging.getLogger(__name__).info("uvloop not installed: using the default event loop")
        return
    uvloop.install()
