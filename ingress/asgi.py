"""The ingress as an import string for ASGI servers: `ingress.asgi:app_from_env` (a factory).

`HOOKSTREAM_INGRESS_BASELINE_NO_PUBLISH=1` replaces publishing with an immediate 202. It
exists only for `bench/ingress.py`'s baseline and is loudly logged; never set it in service.
"""

from __future__ import annotations

import logging
import os

from core.settings import get_settings
from ingress.app import IngressApp, create_app
from ingress.publishing import NullPublisher

BASELINE_ENV = "HOOKSTREAM_INGRESS_BASELINE_NO_PUBLISH"


def app_from_env() -> IngressApp:
    logging.basicConfig(level=os.environ.get("HOOKSTREAM_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    publisher = NullPublisher() if os.environ.get(BASELINE_ENV) == "1" else None
    return create_app(get_settings(), publisher=publisher)
