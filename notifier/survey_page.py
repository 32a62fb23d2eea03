"""The page behind the personal survey link: `GET /s/{token}`.

The survey itself lives in the survey platform; this page proves the link works and says
which survey and respondent it belongs to. The admin app mounts the router (the link's base
is `HOOKSTREAM_SURVEY_BASE_URL`); an unknown or malformed token is a 404.
"""

from __future__ import annotations

import html
import re

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session, sessionmaker

from notifier import store

_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_NOT_FOUND = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Link not valid</title>"
              "</head>\n<body>\n<h1>This survey link is not valid</h1>\n<p>Check that the whole "
              "link was copied from the invitation.</p>\n</body></html>\n")


def make_router(sessions: sessionmaker[Session], prefix: str = "/s") -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["survey"])

    @router.get("/{token}", response_class=HTMLResponse,
                responses={404: {"description": "No invitation carries this link"}})
    def survey_page(token: str) -> HTMLResponse:  # sync: FastAPI runs it on a thread
        page = store.page_for_token(sessions, token) if _TOKEN.fullmatch(token) else None
        if page is None:  # a person follows this link: answer with a page, not JSON
            return HTMLResponse(_NOT_FOUND, status_code=404)
        survey, email = html.escape(page.survey_name), html.escape(page.email)
        return HTMLResponse(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{survey}</title></head>\n<body>\n<h1>{survey}</h1>\n"
            f"<p>This is the personal survey link of <strong>{email}</strong>.</p>\n"
            "</body></html>\n")

    return router


def router_for(database_url: str, prefix: str = "/s") -> APIRouter:
    """The router with its own engine on `database_url` (what the admin app mounts:
    `app.include_router(router_for(settings.database_url))`)."""
    from core.sql import make_engine, session_factory

    return make_router(session_factory(make_engine(database_url)), prefix)
