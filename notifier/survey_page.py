"""The page behind the personal survey link: `GET /s/{token}`, its own small app and process
(`hookstream survey-page`, HOOKSTREAM_SURVEY_HOST:HOOKSTREAM_SURVEY_PORT, default 8084).

Respondents open it from the internet, so it runs apart from the admin API, which never has
to face the internet. The survey itself lives in the survey platform; this page proves the
link works and says which survey and respondent it belongs to. The path is that of
`HOOKSTREAM_SURVEY_BASE_URL` (default `/s`); an unknown or malformed token is a 404 page.
Beside it: `/healthz`, `/readyz` (the database answers) and `/metrics`.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Route

from core.serving import probe_routes
from core.settings import Settings
from core.sql import make_engine, session_factory
from notifier import store

log = logging.getLogger(__name__)
PAGES = Counter("hookstream_survey_pages_total", "Survey link pages served", ["status"])

_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_NOT_FOUND = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Link not valid</title>"
              "</head>\n<body>\n<h1>This survey link is not valid</h1>\n<p>Check that the whole "
              "link was copied from the invitation.</p>\n</body></html>\n")


def page_path(survey_base_url: str) -> str:
    """The path the links of `survey_base_url` point at (`http://host:8084/s` -> `/s`)."""
    return urlsplit(survey_base_url).path.rstrip("/") or "/s"


def page_routes(sessions: sessionmaker[Session], prefix: str = "/s") -> list[BaseRoute]:
    def survey_page(request: Request) -> HTMLResponse:  # sync: Starlette runs it on a thread
        token = request.path_params["token"]
        page = store.page_for_token(sessions, token) if _TOKEN.fullmatch(token) else None
        if page is None:  # a person follows this link: answer with a page, not JSON
            PAGES.labels("404").inc()
            return HTMLResponse(_NOT_FOUND, status_code=404)
        PAGES.labels("200").inc()
        survey, email = html.escape(page.survey_name), html.escape(page.email)
        return HTMLResponse(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{survey}</title></head>\n<body>\n<h1>{survey}</h1>\n"
            f"<p>This is the personal survey link of <strong>{email}</strong>.</p>\n"
            "</body></html>\n")

    return [Route(f"{prefix}/{{token}}", survey_page, methods=["GET"])]


def create_app(settings: Settings) -> Starlette:
    """The page and the probes, with an engine of their own on HOOKSTREAM_DATABASE_URL (read
    only: the notifier migrates the tables it owns)."""
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)

    def select_one() -> None:
        with sessions() as s:
            s.execute(text("SELECT 1"))

    async def ready() -> dict[str, bool]:
        try:
            await run_in_threadpool(select_one)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; said so
            log.warning("readiness: the database does not answer: %s", type(exc).__name__)
            return {"database": False}
        return {"database": True}

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            engine.dispose()

    return Starlette(routes=[*page_routes(sessions, page_path(settings.survey_base_url)),
                             *probe_routes(ready)], lifespan=lifespan)
