"""`hookstream notifier` (invitations and alerts over SMTP) and `hookstream survey-page` (the
page behind the personal survey links)."""

from __future__ import annotations

import logging

import typer


def register(app: typer.Typer) -> None:
    @app.command("notifier")
    def notifier(
        log_level: str = typer.Option("info", help="debug, info, warning or error"),
    ) -> None:
        """Consume invitations.due and mail each invitation once; consume automations.errors
        and mail grouped alerts; disable automations that keep failing.

        SMTP from HOOKSTREAM_SMTP_URL (smtp://user:pass@host:587?starttls=1, smtps://...);
        /metrics, /healthz (liveness) and /readyz (readiness) on HOOKSTREAM_NOTIFIER_PORT.
        Stops cleanly on SIGINT/SIGTERM.
        """
        import asyncio

        from core.logs import KAFKA_LOGGERS, install_repeat_filter
        from core.settings import get_settings
        from notifier.app import run
        from notifier.smtp_config import SmtpUrlError

        logging.basicConfig(level=log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings = get_settings()
        # After the imports above (they create the loggers): a broker or SMTP outage is one
        # line per interval with a count, not one per connection attempt.
        install_repeat_filter((*KAFKA_LOGGERS, "notifier", "automations"),
                              settings.log_repeat_seconds)
        try:
            _install_uvloop()  # a third less CPU per mail (bench/notifier.py)
            asyncio.run(run(settings))
        except SmtpUrlError as exc:
            typer.secho(f"error: HOOKSTREAM_SMTP_URL: {exc}", fg="red", err=True)
            raise typer.Exit(2) from exc

    @app.command("survey-page")
    def survey_page(
        host: str | None = typer.Option(None, help="Bind address (default "
                                        "HOOKSTREAM_SURVEY_HOST)"),
        port: int | None = typer.Option(None, help="Port (default HOOKSTREAM_SURVEY_PORT)"),
        log_level: str = typer.Option("info", help="uvicorn log level"),
    ) -> None:
        """Serve the page behind the personal survey links (GET /s/{token}, the path of
        HOOKSTREAM_SURVEY_BASE_URL), with /healthz, /readyz and /metrics. It reads the
        notifier's tables (HOOKSTREAM_DATABASE_URL) and is the only part respondents reach."""
        import uvicorn

        from core.settings import get_settings
        from notifier.survey_page import create_app

        s = get_settings()
        # No access log: each line would carry a respondent's personal token.
        uvicorn.run(create_app(s), host=host or s.survey_host, port=port or s.survey_port,
                    log_level=log_level, access_log=False)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        logging.getLogger(__name__).info("uvloop not installed: using the default event loop")
        return
    uvloop.install()
