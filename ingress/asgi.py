"""The ingress as an import string for ASGI servers: `ingress.asgi:app_from_env` (a factory).

Everything it needs comes from `core.settings.Settings` (HOOKSTREAM_* environment variables).
"""

from __future__ import annotations

import logging

from core.logs import KAFKA_LOGGERS, install_repeat_filter
from core.settings import Settings, get_settings
from ingress.app import IngressApp, create_app


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def app_from_env() -> IngressApp:
    settings = get_settings()
    configure_logging(settings)
    app = create_app(settings)
    install_repeat_filter((*KAFKA_LOGGERS, "ingress"), settings.log_repeat_seconds)
    return app
