"""The web console: the help article's wizard and the automation pages, at `/console` on the
admin app. Server-rendered (Jinja2) from the same service layer as the admin API; a small
script adds live refresh and copy buttons, and every page works without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from control_plane.activity import Activity

STATIC = Path(__file__).parent / "static"


def mount(app: FastAPI, cp: Any, activity: Activity) -> None:
    """Add the console's routes and static files to the admin app (`cp`: its AdminBackend)."""
    from control_plane.console.routes import router

    app.include_router(router(cp, activity))
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
