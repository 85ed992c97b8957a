"""The pages' wiring: :func:`mount` adds the terminal, ops and officer consoles and their static files to
the API application (``cloud.api.main.create_app`` calls it).

Each console is its own package with its own router (cloud/web/terminal, ops, officer); templates live
under ``cloud/web/templates/{base,terminal,officer,ops}`` and the stylesheet and the one small script
under ``cloud/web/static``, served from the package itself (no CDN, no build step).  A page that needs
someone signed in raises :class:`cloud.web.session.SignInRequired`; here it becomes a redirect (303) to
the right sign-in page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from cloud.web.i18n import LANGUAGES
from cloud.web.officer.routes import router as officer_router
from cloud.web.ops.routes import router as ops_router
from cloud.web.session import SignInRequired
from cloud.web.templates import environment
from cloud.web.terminal.loans import router as loans_router
from cloud.web.terminal.routes import router as terminal_router
from cloud.web.usage.routes import page_state
from cloud.web.usage.routes import router as usage_router

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/static"
ROUTERS = (terminal_router, loans_router, usage_router, ops_router, officer_router)


def mount(app: FastAPI) -> None:
    """Add the pages to ``app`` (whose ``state`` holds the pool and settings, as create_app sets them)."""
    for router in ROUTERS:
        app.include_router(router)
    # the pages' own routes, for the usage events' route patterns (cloud/web/usage/events.py route_of)
    app.state.page_routes = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    for language in LANGUAGES:  # the terminal's layout asks whether to show the usage question (usage/routes.py)
        environment(language).globals["usage_state"] = page_state
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")

    async def sign_in_required(request: Request, exc: Exception) -> RedirectResponse:
        assert isinstance(exc, SignInRequired)
        return RedirectResponse(exc.location, status_code=303)

    app.add_exception_handler(SignInRequired, sign_in_required)
